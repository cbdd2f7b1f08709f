"""Tensor: a lazy, numpy-like array on an HCQ device.

    from tensor import Tensor
    a = Tensor.rand(512, 512, device="AMD", seed=0)
    b = (a @ a.T).relu().sum(axis=1)
    print(b.numpy())

Nothing runs until `.numpy()`, `.realize()` or `.to(other_device)`; `Tensor.schedule(...)` shows the kernels
that would run. Results follow numpy's semantics (broadcasting, type promotion, NaN handling) within the
dtypes float32, float16, int32 and bool; numpy's float64/int64 results are narrowed to float32/int32.

Operators follow numpy too: `//` floors and `%` takes the divisor's sign (integer division by zero gives 0,
numpy's value, without its warning); `**` on int32 wraps like numpy's and refuses a negative Python int
exponent as numpy does, while a negative element of an int32 exponent *tensor* gives the truncated result
(1 for base 1, +-1 for base -1, else 0) because it is only known on the device. float `**` is
exp2(b * log2|a|) in float32 (relative error about |log2 result| * 1e-7) except for exponents 0, 0.5, 1, 2, -1
and small whole numbers, which multiply. A tensor holds at most MAX_ELEMENTS (2**31 - 1) elements: kernels
index with int32, so a larger shape is refused when it is made, lazily or not.
"""
from __future__ import annotations

import atexit
import functools
import math
import numbers
import operator
from typing import Any, Optional, Sequence, Union

import numpy as np

from tensor import dtypes
from tensor.lazy import (LazyNode, broadcast_shapes, expand_shape, pad_shape, permute_shape, prod, reshape_shape,
                         slice_shape)
from tensor.runtime import Devices, copy_between
from tensor.schedule import ScheduleItem, run, schedule

# Open devices, one per name for the whole process: a device is locked to the process that opened it.
DEVICES = Devices()
atexit.register(DEVICES.close)

Scalar = Union[int, float, bool]
MAX_ELEMENTS = 2 ** 31 - 1  # kernels index elements with int32 (compiler.ir), so no tensor may hold more
INT32_MIN, INT32_MAX = -(2 ** 31), 2 ** 31 - 1
# The numpy function whose result type (and, for the tests, values) each op follows.
NP_UFUNC = {"add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.true_divide, "maximum": np.maximum,
            "minimum": np.minimum, "lt": np.less, "le": np.less_equal, "eq": np.equal, "ne": np.not_equal,
            "and": np.bitwise_and, "or": np.bitwise_or, "xor": np.bitwise_xor, "neg": np.negative, "exp": np.exp,
            "log": np.log, "sqrt": np.sqrt, "sin": np.sin, "cos": np.cos, "tanh": np.tanh, "not": np.invert,
            "floordiv": np.floor_divide, "mod": np.remainder, "pow": np.power, "abs": np.absolute}
_RESULT_CACHE: dict[tuple, str] = {}


def _result_dtype(op: str, *operands: Any) -> str:
    """numpy's result dtype for op on operands (dtype names, or Python scalars kept as values), narrowed."""
    key = (op,) + tuple(o if isinstance(o, str) else type(o).__name__ for o in operands)  # NEP 50: types, not values
    if key in _RESULT_CACHE:
        return _RESULT_CACHE[key]
    # NEP 50: a Python scalar's type decides, not its value, so a 1 of that type stands in (a sample -1 would
    # make numpy's int ** negative-int check fire while only asking for a dtype).
    samples = [np.ones(1, dtypes.DTYPES[o]) if isinstance(o, str) else type(o)(1) for o in operands]
    try:
        with np.errstate(all="ignore"):
            out = NP_UFUNC[op](*samples)
    except TypeError as e:
        names = ", ".join(o if isinstance(o, str) else type(o).__name__ for o in operands)
        raise TypeError(f"{op} is not defined for {names} (numpy: {e})") from None
    _RESULT_CACHE[key] = dtypes.to_dtype(np.asarray(out).dtype)
    return _RESULT_CACHE[key]


def _normalize_axes(axis: Any, ndim: int, fn: str = "axis") -> tuple[int, ...]:
    if axis is None:
        return tuple(range(ndim))
    axes = tuple(axis) if isinstance(axis, (tuple, list)) else (axis,)
    out = []
    for a in axes:
        a = _whole(a, fn, "axis")
        if not -ndim <= a < ndim:
            raise np.exceptions.AxisError(f"axis {a} is out of bounds for a tensor of dimension {ndim}")
        out.append(a % ndim)
    if len(set(out)) != len(out):
        raise ValueError(f"duplicate axes in {axis}")
    return tuple(sorted(out))


class _class_or_instance:
    """A method callable on the class with the tensors as arguments, or on a tensor (which comes first)."""

    def __init__(self, fn: Any):
        self.fn = fn
        self.__doc__ = fn.__doc__

    def __get__(self, obj: Any, cls: Any) -> Any:
        return self.fn if obj is None else functools.partial(self.fn, obj)


class Tensor:
    """A lazy n-dimensional array on one device (see the module docstring)."""

    __slots__ = ("node",)
    __array_priority__ = 1000  # numpy defers to our operators: array + tensor is a tensor

    def __init__(self, data: Any, device: Optional[str] = None, dtype: Any = None):
        if isinstance(data, LazyNode):
            # Every op makes its result here, so this one check refuses any shape kernels cannot index.
            what = data.arg[0] if data.kind == "view" else data.arg if data.kind == "ewise" else data.kind
            _check_elements(data.shape, {"const": "full"}.get(what, what))
            self.node = data
            return
        if isinstance(data, Tensor):
            raise TypeError("Tensor(tensor) is not a copy; use tensor.to(device) or tensor.cast(dtype)")
        arr = np.asarray(data)
        _check_elements(arr.shape, "Tensor")
        if dtype is None:
            if arr.dtype.kind in "iu" and arr.size and (arr.max() > np.iinfo(np.int32).max or arr.min() < np.iinfo(np.int32).min):
                raise OverflowError("integer data outside int32: tensors hold int32; pass dtype='float32' to convert")
            dt = dtypes.to_dtype(arr.dtype)
        else:
            dt = dtypes.to_dtype(dtype)
        dev = DEVICES[device].name
        # A C-ordered private copy; unlike np.ascontiguousarray it keeps a 0-d array 0-d.
        store = arr.astype(dtypes.DTYPES[dt] if dt != dtypes.bool_ else np.int32, order="C", copy=True)
        self.node = LazyNode("host", arr.shape, dt, dev, arg=store)

    # --- creation ---
    @staticmethod
    def full(shape: Any, value: Scalar, device: Optional[str] = None, dtype: Any = None) -> "Tensor":
        """shape filled with value (nothing is stored until a kernel needs it)."""
        return Tensor._full(_shape_arg(shape, "full"), value, device, dtype)

    @staticmethod
    def _full(shape: tuple[int, ...], value: Scalar, device: Optional[str], dtype: Any) -> "Tensor":
        if isinstance(value, np.ndarray) and value.ndim == 0:
            value = value[()]  # the numpy scalar, which keeps its dtype
        if isinstance(value, str) or not isinstance(value, (bool, numbers.Number, np.bool_)):
            raise TypeError(f"full: the fill value {value!r} ({type(value).__name__}) is not a number or bool")
        dt = dtypes.to_dtype(dtype) if dtype is not None else dtypes.to_dtype(np.asarray(value).dtype)
        return Tensor(LazyNode("const", shape, dt, DEVICES[device].name, arg=_fits(value, dt, "full")))

    @staticmethod
    def zeros(*shape: Any, device: Optional[str] = None, dtype: Any = "float32") -> "Tensor":
        return Tensor._full(_shape_arg(shape, "zeros"), 0, device, dtype)

    @staticmethod
    def ones(*shape: Any, device: Optional[str] = None, dtype: Any = "float32") -> "Tensor":
        return Tensor._full(_shape_arg(shape, "ones"), 1, device, dtype)

    @staticmethod
    def arange(start: Scalar, stop: Optional[Scalar] = None, step: Scalar = 1, device: Optional[str] = None,
               dtype: Any = None) -> "Tensor":
        """numpy.arange: arange(stop), arange(start, stop[, step]); float bounds and steps are allowed."""
        bounds = (0, start, step) if stop is None else (start, stop, step)
        for name, v in zip(("start", "stop", "step"), bounds):
            if isinstance(v, (bool, np.bool_, str)) or not isinstance(v, numbers.Real):
                raise TypeError(f"arange: {name} {v!r} ({type(v).__name__}) is not a number")
        lo, hi, st = bounds
        if st == 0:
            raise ValueError("arange: step 0 would never reach stop; pass a step other than 0")
        _check_elements((max(0, math.ceil((hi - lo) / st)),), "arange")  # before numpy allocates them
        return Tensor(np.arange(lo, hi, st), device, dtype)

    @staticmethod
    def eye(n: int, m: Optional[int] = None, device: Optional[str] = None, dtype: Any = "float32") -> "Tensor":
        """numpy.eye: n x m (m defaults to n), ones on the diagonal."""
        rows = _whole(n, "eye", "n")
        cols = rows if m is None else _whole(m, "eye", "m")
        if rows < 0 or cols < 0:
            raise ValueError(f"eye: negative dimensions are not allowed: shape {(rows, cols)}")
        _check_elements((rows, cols), "eye")
        return Tensor(np.eye(rows, cols), device, dtype)

    @staticmethod
    def rand(*shape: Any, device: Optional[str] = None, seed: Optional[int] = None, dtype: Any = "float32") -> "Tensor":
        """Uniform [0, 1) from numpy's PCG64 with this seed: the same numbers on every device."""
        return Tensor(np.random.default_rng(seed).random(_shape_arg(shape, "rand"), dtype=np.float32), device, dtype)

    @staticmethod
    def randn(*shape: Any, device: Optional[str] = None, seed: Optional[int] = None, dtype: Any = "float32") -> "Tensor":
        """Standard normal from numpy's PCG64 with this seed."""
        return Tensor(np.random.default_rng(seed).standard_normal(_shape_arg(shape, "randn"), dtype=np.float32),
                      device, dtype)

    # --- properties ---
    @property
    def shape(self) -> tuple[int, ...]:
        return self.node.shape

    @property
    def dtype(self) -> str:
        return self.node.dtype

    @property
    def device(self) -> str:
        return self.node.device

    @property
    def ndim(self) -> int:
        return len(self.node.shape)

    @property
    def size(self) -> int:
        return self.node.size

    def __len__(self) -> int:
        if not self.shape:
            raise TypeError("len() of a 0-d tensor")
        return self.shape[0]

    def __repr__(self) -> str:
        """The values, like numpy and torch (this computes the tensor); numpy summarises big ones with '...'."""
        try:
            values = self.numpy()
        except Exception as e:  # a repr that raises hides the tensor in debuggers and tracebacks: say why instead
            return f"<Tensor {self.shape} {self.dtype} on {self.device}, not computed: {type(e).__name__}: {e}>"
        body = np.array2string(values, separator=", ", prefix="Tensor(", threshold=1000, edgeitems=3)
        shape = f", shape={self.shape}" if values.size == 0 and self.ndim != 1 else ""
        return f"Tensor({body}{shape}, device='{self.device}', dtype='{self.dtype}')"

    __hash__ = object.__hash__  # == builds a tensor, so hashing is by identity

    def __bool__(self) -> bool:
        if self.size != 1:
            raise ValueError("the truth value of a tensor with more than one element is ambiguous; use .any()/.all() "
                             "or compare .numpy()")
        return bool(self.item())

    def _one(self, what: str) -> Scalar:
        if self.size != 1:
            raise TypeError(f"{what}() needs a tensor of one element, this one has shape {self.shape} ({self.size} "
                            f"elements); pick one first (t[0]) or use .tolist()")
        return self.item()

    def __float__(self) -> float:
        return float(self._one("float"))

    def __int__(self) -> int:
        return int(self._one("int"))

    def __index__(self) -> int:
        """A one-element int32 tensor used where Python wants an integer (a list index, range(t))."""
        if self.dtype != dtypes.int32:
            raise TypeError(f"a {self.dtype} tensor cannot be used as an index (only int32 ones can); use int(t) to "
                            f"truncate it or t.cast('int32')")
        return int(self._one("index"))

    # --- running ---
    @_class_or_instance
    def schedule(*tensors: "Tensor") -> list[ScheduleItem]:
        """The uploads and kernels that realizing these tensors would run, in order; nothing runs.
        `t.schedule()` or `Tensor.schedule(t1, t2)`."""
        return schedule([t.node for t in tensors])

    def realize(self, *others: "Tensor") -> "Tensor":
        """Compute this tensor (and others) on their devices; returns without waiting for the GPU."""
        run(schedule([t.node for t in (self, *others)]), DEVICES)
        return self

    def numpy(self) -> np.ndarray:
        """The values as a numpy array (waits for the device)."""
        node = self.node
        data, kind = node.arg, node.kind  # data first: another thread's upload clears arg after setting kind
        if kind == "host":
            out = data
        else:
            if not node.realized:
                self.realize()
            raw = node.runtime.download(node.buffer, node.size * dtypes.itemsize(node.dtype))
            out = np.frombuffer(raw, dtypes.storage(node.dtype).name).reshape(node.shape)
        if node.dtype == dtypes.bool_:
            return out.astype(np.bool_)
        return out.astype(dtypes.DTYPES[node.dtype], copy=True)

    def item(self) -> Scalar:
        if self.size != 1:
            raise ValueError(f"item() needs a tensor of one element, this one has shape {self.shape}")
        return self.numpy().reshape(()).item()

    def tolist(self) -> Any:
        return self.numpy().tolist()

    def to(self, device: str) -> "Tensor":
        """This tensor on another device: realized here, moved by both devices' copy queues."""
        dst = DEVICES[device]
        if dst.name == self.device:
            return self
        data, kind = self.node.arg, self.node.kind  # data first, as in numpy()
        if kind == "host":
            return Tensor(LazyNode("host", self.shape, self.dtype, dst.name, arg=data))
        self.realize()
        src = self.node.runtime
        nbytes = self.size * dtypes.itemsize(self.dtype)
        node = LazyNode("buffer", self.shape, self.dtype, dst.name)
        node.become_buffer(dst, copy_between(src, self.node.buffer, dst, nbytes))
        return Tensor(node)

    # --- elementwise ---
    def _same_device(self, other: "Tensor", op: str) -> None:
        if other.device != self.device:
            raise ValueError(f"{op}: tensors on different devices, {self.device} and {other.device}; move one with "
                             f".to('{self.device}') or .to('{other.device}')")

    def _ewise(self, op: str, dtype: str, *srcs: "Tensor") -> "Tensor":
        return Tensor(LazyNode("ewise", srcs[0].shape, dtype, self.device, tuple(s.node for s in srcs), op))

    def cast(self, dtype: Any) -> "Tensor":
        dt = dtypes.to_dtype(dtype)
        return self if dt == self.dtype else self._ewise("cast", dt, self)

    astype = cast

    def _broadcast_with(self, other: Any, op: str) -> tuple["Tensor", "Tensor", Any]:
        """Both operands at the broadcast shape; a Python scalar becomes a constant. Returns (a, b, b_for_dtype)."""
        if isinstance(other, Tensor):
            self._same_device(other, op)
            shape = broadcast_shapes(self.shape, other.shape)
            return self.broadcast_to(shape), other.broadcast_to(shape), other.dtype
        if isinstance(other, np.ndarray):
            return self._broadcast_with(Tensor(other, self.device), op)
        if isinstance(other, (bool, numbers.Number, np.bool_)) and not isinstance(other, (complex, np.complexfloating)):
            return self, other, other  # type: ignore[return-value]
        raise TypeError(f"{op}: cannot combine a tensor with {type(other).__name__}")

    def _binary(self, op: str, other: Any, reverse: bool = False) -> "Tensor":
        a, b, b_kind = self._broadcast_with(other, op)
        operands = (b_kind, self.dtype) if reverse else (self.dtype, b_kind)
        out = _result_dtype(op, *operands)
        if op in ("lt", "le", "eq", "ne"):
            common = dtypes.result_type(*operands)
        else:
            common = out
        if op == "pow" and not reverse and not isinstance(b, Tensor) and common == dtypes.int32 and \
                isinstance(b, numbers.Integral) and b < 0:
            raise ValueError(f"{self.dtype} ** {b}: integers to negative integer powers are not allowed (numpy refuses "
                             f"them too); use a float exponent ({b}.0) or cast the tensor to float32 first")
        if not isinstance(b, Tensor):
            b = Tensor(LazyNode("const", a.shape, common, self.device, arg=_fits(b, common, op)))
        x, y = a.cast(common), b.cast(common)
        if reverse:
            x, y = y, x
        return x._ewise(op, out, x, y)

    def __add__(self, o: Any) -> "Tensor": return self._binary("add", o)
    def __radd__(self, o: Any) -> "Tensor": return self._binary("add", o, True)
    def __sub__(self, o: Any) -> "Tensor": return self._binary("sub", o)
    def __rsub__(self, o: Any) -> "Tensor": return self._binary("sub", o, True)
    def __mul__(self, o: Any) -> "Tensor": return self._binary("mul", o)
    def __rmul__(self, o: Any) -> "Tensor": return self._binary("mul", o, True)
    def __truediv__(self, o: Any) -> "Tensor": return self._binary("div", o)
    def __rtruediv__(self, o: Any) -> "Tensor": return self._binary("div", o, True)
    def __lt__(self, o: Any) -> "Tensor": return self._binary("lt", o)
    def __le__(self, o: Any) -> "Tensor": return self._binary("le", o)
    def __gt__(self, o: Any) -> "Tensor": return self._binary("lt", o, True)
    def __ge__(self, o: Any) -> "Tensor": return self._binary("le", o, True)
    def __eq__(self, o: Any) -> "Tensor": return self._binary("eq", o)  # type: ignore[override]
    def __ne__(self, o: Any) -> "Tensor": return self._binary("ne", o)  # type: ignore[override]
    def __and__(self, o: Any) -> "Tensor": return self._binary("and", o)
    def __rand__(self, o: Any) -> "Tensor": return self._binary("and", o, True)
    def __or__(self, o: Any) -> "Tensor": return self._binary("or", o)
    def __ror__(self, o: Any) -> "Tensor": return self._binary("or", o, True)
    def __xor__(self, o: Any) -> "Tensor": return self._binary("xor", o)
    def __rxor__(self, o: Any) -> "Tensor": return self._binary("xor", o, True)
    def __floordiv__(self, o: Any) -> "Tensor": return self._binary("floordiv", o)
    def __rfloordiv__(self, o: Any) -> "Tensor": return self._binary("floordiv", o, True)
    def __mod__(self, o: Any) -> "Tensor": return self._binary("mod", o)
    def __rmod__(self, o: Any) -> "Tensor": return self._binary("mod", o, True)
    def __pow__(self, o: Any) -> "Tensor": return self._binary("pow", o)
    def __rpow__(self, o: Any) -> "Tensor": return self._binary("pow", o, True)
    def __divmod__(self, o: Any) -> tuple["Tensor", "Tensor"]: return self // o, self % o
    def __abs__(self) -> "Tensor": return self.abs()

    def pow(self, o: Any) -> "Tensor":
        """numpy.power (see the module docstring for negative int exponents and float precision)."""
        return self._binary("pow", o)

    def maximum(self, o: Any) -> "Tensor":
        return self._binary("maximum", o)

    def minimum(self, o: Any) -> "Tensor":
        return self._binary("minimum", o)

    def _unary(self, op: str, np_op: Optional[str] = None) -> "Tensor":
        out = _result_dtype(np_op or op, self.dtype)
        x = self.cast(out)
        return x._ewise(op, out, x)

    def __neg__(self) -> "Tensor": return self._unary("neg")
    def __invert__(self) -> "Tensor": return self._unary("not")

    def exp(self) -> "Tensor": return self._unary("exp")
    def log(self) -> "Tensor": return self._unary("log")
    def sqrt(self) -> "Tensor": return self._unary("sqrt")
    def sin(self) -> "Tensor": return self._unary("sin")
    def cos(self) -> "Tensor": return self._unary("cos")
    def tanh(self) -> "Tensor": return self._unary("tanh")
    def sigmoid(self) -> "Tensor": return self._unary("sigmoid", "exp")

    def relu(self) -> "Tensor":
        if self.dtype == dtypes.bool_:
            raise TypeError("relu is not defined for bool tensors")
        return self._ewise("relu", self.dtype, self)

    def abs(self) -> "Tensor":
        """numpy.abs: -0.0 becomes 0.0, and int32's -2**31 stays itself (it wraps, as in numpy)."""
        return self._ewise("abs", self.dtype, self) if self.dtype != dtypes.bool_ else self

    @_class_or_instance
    def where(cond: "Tensor", a: Any, b: Any) -> "Tensor":
        """a where cond, else b (numpy.where), broadcasting all three: `Tensor.where(cond, a, b)` or
        `cond.where(a, b)`."""
        if not isinstance(cond, Tensor):
            raise TypeError("where: the condition must be a tensor")
        ts = [x for x in (a, b) if isinstance(x, Tensor)]
        for t in ts:
            cond._same_device(t, "where")
        kinds = [x.dtype if isinstance(x, Tensor) else x for x in (a, b)]
        out = dtypes.result_type(*kinds)
        shape = broadcast_shapes(cond.shape, *[t.shape for t in ts])
        c = cond.cast(dtypes.bool_).broadcast_to(shape)

        def side(x: Any) -> "Tensor":
            if isinstance(x, Tensor):
                return x.cast(out).broadcast_to(shape)
            return Tensor(LazyNode("const", shape, out, cond.device, arg=_fits(x, out, "where")))
        return c._ewise("where", out, c, side(a), side(b))

    # --- views (no copies: consumers index through them) ---
    def _view(self, op: str, shape: tuple[int, ...], param: Any) -> "Tensor":
        return Tensor(LazyNode("view", shape, self.dtype, self.device, (self.node,), (op, param)))

    def reshape(self, *shape: Any) -> "Tensor":
        new = reshape_shape(self.shape, _shape_arg(shape, "reshape", allow_infer=True))
        return self if new == self.shape else self._view("reshape", new, None)

    def flatten(self) -> "Tensor":
        return self.reshape(-1)

    def permute(self, *order: Any) -> "Tensor":
        if len(order) == 1 and isinstance(order[0], (tuple, list)):
            order = tuple(order[0])
        order = tuple(_whole(o, "permute", "axis") % max(self.ndim, 1) for o in order)
        new = permute_shape(self.shape, order)
        return self if order == tuple(range(self.ndim)) else self._view("permute", new, order)

    def transpose(self, *axes: Any) -> "Tensor":
        """numpy.transpose: reversed axes, or the order given."""
        return self.permute(*(axes if axes else reversed(range(self.ndim))))

    @property
    def T(self) -> "Tensor":
        return self.transpose()

    def expand(self, *shape: Any) -> "Tensor":
        new = expand_shape(self.shape, _shape_arg(shape, "expand"))
        return self if new == self.shape else self._view("expand", new, None)

    def broadcast_to(self, shape: Sequence[int]) -> "Tensor":
        shape = _shape_arg(shape, "broadcast_to")
        if shape == self.shape:
            return self
        if len(shape) < self.ndim or broadcast_shapes(self.shape, shape) != shape:
            raise ValueError(f"cannot broadcast {self.shape} to {shape}")
        x = self.reshape((1,) * (len(shape) - self.ndim) + self.shape)
        return x.expand(*shape)

    def unsqueeze(self, axis: int) -> "Tensor":
        axis = _whole(axis, "unsqueeze", "axis") % (self.ndim + 1)
        return self.reshape(self.shape[:axis] + (1,) + self.shape[axis:])

    def squeeze(self, axis: Any = None) -> "Tensor":
        if axis is None:
            axes: Sequence[int] = [i for i, d in enumerate(self.shape) if d == 1]
        else:
            axes = _normalize_axes(axis, self.ndim, "squeeze")
        if any(self.shape[a] != 1 for a in axes):
            raise ValueError(f"cannot squeeze axes {axes} of shape {self.shape}: they are not size 1")
        return self.reshape(tuple(d for i, d in enumerate(self.shape) if i not in axes))

    def pad(self, pad_width: Any, value: Scalar = 0) -> "Tensor":
        """numpy.pad with mode 'constant': pad_width is n, (before, after) or one pair per axis."""
        given = np.asarray(pad_width)
        if given.dtype.kind not in "iu":
            raise TypeError(f"pad: pad_width {pad_width!r} must hold whole numbers, got {given.dtype}")
        pw = np.broadcast_to(given.astype(np.int64), (self.ndim, 2))
        pads = tuple((int(b), int(a)) for b, a in pw)
        new = pad_shape(self.shape, pads)
        return self if new == self.shape else self._view("pad", new, (pads, value))

    def __getitem__(self, index: Any) -> "Tensor":
        """Basic numpy indexing: ints, slices with steps, None and Ellipsis (no copies)."""
        if not isinstance(index, tuple):
            index = (index,)
        # 0-d integer arrays index like ints (numpy does the same)
        index = tuple(int(i) if isinstance(i, np.ndarray) and i.ndim == 0 and i.dtype.kind in "iu" else i
                      for i in index)
        if any(isinstance(i, (Tensor, np.ndarray, list)) for i in index):
            raise TypeError("advanced (array) indexing is not supported; use where() or slices")
        if sum(i is Ellipsis for i in index) > 1:
            raise IndexError("an index can only have a single ellipsis")
        used = sum(1 for i in index if i is not None and i is not Ellipsis)
        if used > self.ndim:
            raise IndexError(f"too many indices for a tensor of dimension {self.ndim}")
        if any(i is Ellipsis for i in index):
            pos = next(k for k, i in enumerate(index) if i is Ellipsis)
            index = index[:pos] + (slice(None),) * (self.ndim - used) + index[pos + 1:]
        else:
            index = index + (slice(None),) * (self.ndim - used)
        spec, final, axis = [], [], 0
        for i in index:
            if i is None:
                final.append(1)
                continue
            n = self.shape[axis]
            if isinstance(i, slice):
                start, stop, step = i.indices(n)
                count = len(range(start, stop, step))
                spec.append((start if count else 0, step, count))
                final.append(count)
            elif isinstance(i, numbers.Integral) and not isinstance(i, bool):
                if not -n <= i < n:
                    raise IndexError(f"index {i} is out of bounds for axis {axis} with size {n}")
                spec.append((int(i) % n, 1, 1))
            else:
                raise TypeError(f"unsupported index {i!r}: use ints, slices, None or ...")
            axis += 1
        shape = slice_shape(self.shape, tuple(spec))
        x = self if all(s == (0, 1, n) for s, n in zip(spec, self.shape)) else self._view("slice", shape, tuple(spec))
        return x.reshape(tuple(final))

    # --- reductions ---
    def _reduce(self, op: str, axis: Any, keepdims: bool, dtype: str) -> "Tensor":
        axes = _normalize_axes(axis, self.ndim, op)
        kept = tuple(1 if i in axes else d for i, d in enumerate(self.shape))
        if not axes:
            out = self.cast(dtype)
        else:
            if op in ("max", "min") and any(self.shape[a] == 0 for a in axes):
                raise ValueError(f"{op} of an empty axis has no identity (numpy raises too)")
            out = Tensor(LazyNode("reduce", kept, dtype, self.device, (self.node,), (op, axes)))
        if keepdims:
            return out
        return out.reshape(tuple(d for i, d in enumerate(self.shape) if i not in axes))

    def sum(self, axis: Any = None, keepdims: bool = False) -> "Tensor":
        """numpy.sum; int32 and bool sums are int32 (numpy widens to int64)."""
        dt = dtypes.int32 if self.dtype == dtypes.bool_ else self.dtype
        return self._reduce("sum", axis, keepdims, dt)

    def max(self, axis: Any = None, keepdims: bool = False) -> "Tensor":
        return self._reduce("max", axis, keepdims, self.dtype)

    def min(self, axis: Any = None, keepdims: bool = False) -> "Tensor":
        return self._reduce("min", axis, keepdims, self.dtype)

    def mean(self, axis: Any = None, keepdims: bool = False) -> "Tensor":
        axes = _normalize_axes(axis, self.ndim, "mean")
        count = prod(self.shape[a] for a in axes)
        dt = dtypes.float_result(self.dtype)
        # float16 sums and divides in float32 as numpy does: the sum of a few large halves overflows float16
        acc = dtypes.float32 if dt == dtypes.float16 else dt
        total = self.cast(acc).sum(axis, keepdims)
        return (total / float(count) if count else total * float("nan")).cast(dt)

    # --- matmul ---
    def matmul(self, other: "Tensor") -> "Tensor":
        """numpy.matmul: 1-d operands gain and lose an axis; batch axes broadcast; a tiled kernel computes it."""
        if not isinstance(other, Tensor):
            other = Tensor(np.asarray(other), self.device)
        self._same_device(other, "matmul")
        if self.ndim == 0 or other.ndim == 0:
            raise ValueError("matmul: operands must have at least one dimension (use * for scalars)")
        a = self.reshape(1, self.shape[0]) if self.ndim == 1 else self
        b = other.reshape(other.shape[0], 1) if other.ndim == 1 else other
        if a.shape[-1] != b.shape[-2]:
            raise ValueError(f"matmul: {self.shape} @ {other.shape}: inner sizes {a.shape[-1]} and {b.shape[-2]} differ")
        out_dt = dtypes.result_type(self.dtype, other.dtype)
        compute = dtypes.int32 if out_dt == dtypes.bool_ else out_dt
        batch = broadcast_shapes(a.shape[:-2], b.shape[:-2])
        a = a.cast(compute).broadcast_to(batch + a.shape[-2:])
        b = b.cast(compute).broadcast_to(batch + b.shape[-2:])
        shape = batch + (a.shape[-2], b.shape[-1])
        M, K, N = a.shape[-2], a.shape[-1], b.shape[-1]
        if max(M, K, N) > MAX_ELEMENTS - 64:  # tile loops step past the edge by up to one 64-wide tile
            raise ValueError(f"matmul: {self.shape} @ {other.shape}: an axis of {max(M, K, N)} is within a tile of the "
                             f"{MAX_ELEMENTS} (2**31 - 1) element limit; split the matrices")
        if K == 0:  # an empty sum: zeros, with no kernel (a loop of no tiles leaves nothing to stage)
            out = Tensor(LazyNode("const", shape, compute, self.device, arg=0))
        else:
            out = Tensor(LazyNode("matmul", shape, compute, self.device, (a.node, b.node)))
        if out_dt == dtypes.bool_:
            out = out.cast(dtypes.bool_)
        if self.ndim == 1:
            out = out.reshape(out.shape[:-2] + out.shape[-1:])
        if other.ndim == 1:
            out = out.reshape(out.shape[:-1])
        return out

    __matmul__ = matmul

    def __rmatmul__(self, other: Any) -> "Tensor":
        return Tensor(np.asarray(other), self.device).matmul(self)

    def dot(self, other: "Tensor") -> "Tensor":
        return self.matmul(other)


def _whole(value: Any, fn: str, what: str) -> int:
    """value as an int when it is a whole number: int, numpy integer or 0-d integer array. A float or bool is an
    error naming fn and the argument, never rounded: Tensor.zeros(2.5) is a mistake, not a (2,) tensor."""
    if isinstance(value, (bool, np.bool_)) or (isinstance(value, np.ndarray) and value.dtype.kind == "b"):
        raise TypeError(f"{fn}: {what} {value!r} is a bool, not a whole number; pass an int such as 3")
    try:
        return operator.index(value)
    except TypeError:
        pass
    hint = "; int(x) truncates a float if that is what you mean" if isinstance(value, numbers.Real) else ""
    raise TypeError(f"{fn}: {what} {value!r} ({type(value).__name__}) is not a whole number{hint}")


def _shape_arg(shape: Any, fn: str, allow_infer: bool = False) -> tuple[int, ...]:
    """(2, 3), [2, 3], 5, or 2, 3 given as *args, to fn; -1 (one axis inferred) only where allow_infer."""
    if not isinstance(shape, (tuple, list)):
        shape = (shape,)
    if len(shape) == 1 and (isinstance(shape[0], (tuple, list)) or (isinstance(shape[0], np.ndarray) and
                                                                     shape[0].ndim == 1)):
        shape = tuple(shape[0])
    shown = tuple(shape)
    out = tuple(_whole(d, fn, f"shape {shown!r}: axis {i} size") for i, d in enumerate(shape))
    if any(d < (-1 if allow_infer else 0) for d in out):
        allowed = " (-1, for one axis inferred, is the only negative size)" if allow_infer else ""
        raise ValueError(f"{fn}: negative dimensions are not allowed: shape {out}{allowed}")
    if not allow_infer:
        _check_elements(out, fn)
    return out


def _check_elements(shape: Sequence[int], what: str) -> None:
    """Refuse a shape whose element count (or an axis) passes MAX_ELEMENTS, before anything is built for it."""
    count = math.prod(shape)
    if count > MAX_ELEMENTS or any(d > MAX_ELEMENTS for d in shape):
        raise ValueError(f"{what}: a tensor of shape {tuple(shape)} has {count} elements, over the limit of "
                         f"{MAX_ELEMENTS} (2**31 - 1) per tensor and per axis (kernels index with int32); split the "
                         f"work into tensors below the limit, for example in chunks along the first axis")


def _fits(value: Any, dtype: str, op: str) -> Any:
    """A scalar operand as a constant of dtype: an integer that int32 cannot hold is an error, not a wrap."""
    if dtype == dtypes.int32 and isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_)) \
            and not INT32_MIN <= value <= INT32_MAX:
        raise OverflowError(f"{op}: the integer {value} does not fit the int32 tensor (range {INT32_MIN} to "
                            f"{INT32_MAX}); use a float ({value}.0) or cast the tensor to float32")
    return value


def memory(device: Optional[str] = None) -> dict[str, int]:
    """Device memory the tensor layer holds now and at most since the last reset_peak, in bytes."""
    rt = DEVICES[device]
    rt.reclaim()
    return {"used": rt.used, "peak": rt.peak}


def reset_peak(device: Optional[str] = None) -> None:
    DEVICES[device].reset_peak()


def synchronize(device: Optional[str] = None) -> None:
    """Wait for the device's work and return freed buffers."""
    DEVICES[device].synchronize()
