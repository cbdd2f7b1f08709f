#!/usr/bin/env bash
# Installs everything baregpu needs on Debian/Ubuntu, and is safe to rerun:
#   system packages through apt (libusb, ld.lld-19 for AMD code objects, llvm-19 for llvm-objdump-19 and llvm-mc-19
#   (the emulated GPU's decoder is cross-checked against objdump; test kernels from other compilers are assembled),
#   clang-19 (about 150 MB: a test builds an OpenCL kernel with it, a code object from a compiler that is not ours),
#   gcc for the binding layout tests),
#   Python packages into .venv (the project itself in editable mode, with its dev and autogen extras),
#   and the pinned Debian header packages the bindings are generated from (python -m tools.autogen --fetch).
# Runs unattended (no prompts); uses sudo for apt when not root.
set -euo pipefail
cd "$(dirname "$0")"

APT_PACKAGES=(libusb-1.0-0 lld-19 llvm-19 clang-19 gcc)
PYTHON=${PYTHON:-python3}

if [ "$(id -u)" -eq 0 ]; then SUDO=(); else SUDO=(sudo); fi
if ! command -v "$PYTHON" >/dev/null; then APT_PACKAGES+=(python3); PYTHON=python3; fi
# Debian's python3 has no venv/ensurepip until python3-venv is installed.
if ! "$PYTHON" -c "import ensurepip, venv" 2>/dev/null; then APT_PACKAGES+=(python3-venv); fi

if command -v apt-get >/dev/null; then
    echo "setup: apt-get install ${APT_PACKAGES[*]}"
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${APT_PACKAGES[@]}" >/dev/null
else
    echo "setup: apt-get not found; install ${APT_PACKAGES[*]} with your package manager" >&2
fi

"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
    echo "setup: baregpu needs Python >= 3.11; $("$PYTHON" --version) found (set PYTHON=/path/to/python3.11)" >&2; exit 1; }
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[dev,autogen]'

# The pinned header packages (about 160 MB); without them the autogen tests skip and say why.
.venv/bin/python -m tools.autogen --fetch || echo "setup: WARNING: pinned autogen sources not fetched (see above); the binding tests that need them will be skipped" >&2
echo "setup: done. Run the probe with .venv/bin/python -m tools.gpu_probe and the tests with .venv/bin/python -m pytest"
