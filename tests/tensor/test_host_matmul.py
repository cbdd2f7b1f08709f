"""The host matmul kernel (tensor.codegen.host_matmul_kernel) on the CPU device: every edge its blocks have (rows,
columns and K blocks that do not divide, skinny and single-row or single-column products, K = 1, batches), A read
in place or staged (fused producers, transposes), other dtypes, and the tile set for CPUs without AVX-512."""
from __future__ import annotations

import numpy as np
import pytest

from compiler import toolchain
from compiler.llvm_render import render
from compiler.toolchain import host_features
from tensor import Tensor, codegen
from tensor_checks import assert_matches

RNG = np.random.default_rng(7)
TOL = dict(rtol=1e-4, atol=1e-4)  # float32 sums of up to 1000 products; a wrong or missing term is O(1)

SHAPES = [((500, 500), (500, 500)),  # no block divides 500: edge rows, columns and a short last K block
          ((256, 256), (256, 256)),  # blocks divide everything: the paths without bounds checks
          ((130, 129), (129, 65)),  # one row, one column and one k past a block
          ((1, 700), (700, 300)), ((300, 700), (700, 1)), ((1, 300), (300, 1)),  # row and column vectors
          ((200, 1), (1, 300)),  # K = 1
          ((1000, 3), (3, 70)), ((3, 1000), (1000, 200)),  # tall and skinny, wide K
          ((3, 70, 130), (130, 90)), ((2, 1, 65, 33), (3, 33, 70))]  # batched, and a batch broadcast


def _rand(shape: tuple[int, ...], dtype: type = np.float32) -> np.ndarray:
    return RNG.standard_normal(shape).astype(dtype)


@pytest.mark.parametrize("sa,sb", SHAPES)
def test_host_matmul_matches_numpy(sa, sb):
    a, b = _rand(sa), _rand(sb)
    assert_matches((Tensor(a, "CPU") @ Tensor(b, "CPU")).numpy(), a @ b, **TOL)


@pytest.mark.parametrize("sa,sb", [((300, 200), (200, 150)), ((129, 65), (65, 130))])
def test_host_matmul_a_views_and_producers(sa, sb):
    # A fused producer or a sliced view is staged; a transposed buffer is read in place, down its columns.
    a, b = _rand(sa), _rand(sb)
    ta, tb = Tensor(a, "CPU"), Tensor(b, "CPU")
    assert_matches(((ta * 2 + 1).relu() @ tb).numpy(), np.maximum(a * 2 + 1, 0) @ b, **TOL)
    wide = _rand((sa[0], sa[1] + 3))
    assert_matches((Tensor(wide, "CPU")[:, 2:sa[1] + 2] @ tb).numpy(), wide[:, 2:sa[1] + 2] @ b, **TOL)
    at = np.ascontiguousarray(a.T)
    assert_matches((Tensor(at, "CPU").T @ tb).numpy(), a @ b, **TOL)
    assert_matches((ta @ (tb + 1)).numpy(), a @ (b + 1), **TOL)  # fused B
    batched = _rand((2, sa[1], sa[0]))  # a batch of transposes
    want = np.swapaxes(batched, 1, 2) @ b
    assert_matches((Tensor(batched, "CPU").permute(0, 2, 1) @ tb).numpy(), want, **TOL)


def test_host_matmul_other_dtypes():
    ai, bi = RNG.integers(-50, 50, (150, 300)).astype(np.int32), RNG.integers(-50, 50, (300, 70)).astype(np.int32)
    assert_matches((Tensor(ai, "CPU") @ Tensor(bi, "CPU")).numpy(), ai @ bi)
    ah, bh = _rand((130, 200), np.float16), _rand((200, 90), np.float16)
    want = (ah.astype(np.float32) @ bh.astype(np.float32)).astype(np.float16)
    assert_matches((Tensor(ah, "CPU") @ Tensor(bh, "CPU")).numpy(), want, rtol=1e-2, atol=1e-1)


@pytest.mark.parametrize("sa,sb", [((500, 300), (300, 257)), ((1, 130), (130, 50)), ((70, 5), (5, 1))])
def test_host_matmul_without_avx512_tiles(monkeypatch, sa, sb):
    # The tile set for CPUs without AVX-512 (3 vectors of 8 per row) runs correctly on any x86-64 host.
    monkeypatch.setattr(codegen, "_host_avx512", lambda: False)
    a, b = _rand(sa), _rand(sb)
    assert_matches((Tensor(a, "CPU") @ Tensor(b, "CPU")).numpy(), a @ b, **TOL)


@pytest.mark.parametrize("avx512", [True, False])
def test_host_tiles_shrink_to_the_matrix(avx512):
    BM, BN, BK, VM, VN = codegen.HOST_MM_TILES[avx512]
    assert codegen.host_matmul_tiles(4096, 4096, avx512) == (BM, BN, BK, VM, VN)
    # A single row takes one row of threads (VM rows), a single column one vector of threads: no block of
    # rows or columns that do not exist is computed.
    assert codegen.host_matmul_tiles(1, 4096, avx512)[0] == VM
    m, n = codegen.host_matmul_tiles(4096, 1, avx512)[:2]
    assert (m, n) == (BM, BN // VN)
    assert codegen.host_matmul_tiles(BM // 2 + 1, 4096, avx512)[0] == BM
    assert codegen.host_matmul_tiles(BM // 2, 4096, avx512)[0] == BM // 2


@pytest.mark.skipif("avx2" not in host_features() or "fma" not in host_features(),
                    reason="this host has no AVX2 and FMA: its matmul has no vector FMAs or gathers to look for")
def test_host_matmul_machine_code_is_vector_fma_without_gathers():
    # The B panel is staged with vector moves (a gather per vector would cost a third of the time) and the
    # inner loop is broadcast + FMA on vector registers.
    x, y = Tensor(_rand((512, 512)), "CPU"), Tensor(_rand((512, 512)), "CPU")
    kernel, _, _ = codegen.kernel_for((x.realize() @ y.realize()).node, host=True)
    tm = toolchain._host_tm()
    mod = toolchain._parse(render(kernel, "host"), kernel.name)
    mod.triple, mod.data_layout = tm.triple, str(tm.target_data)
    toolchain._optimize(mod, tm)
    asm = tm.emit_assembly(mod)
    assert "vgather" not in asm
    assert any("vfmadd" in line and ("ymm" in line or "zmm" in line) for line in asm.splitlines())
