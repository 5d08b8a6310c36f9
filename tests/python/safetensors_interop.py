"""Safetensors interop check between latentcell's C++ reader/writer and safetensors.torch.

Used by tests/test_safetensors.cpp, in two modes:
  write OUT   write the reference tensors and metadata below with safetensors.torch.save_file
  check IN    load a file the C++ test wrote and require exactly the same tensors and metadata

The same values are spelled out in interopTensors() in test_safetensors.cpp. Keep the two in
sync: each side checks what the other wrote bit for bit, which is what catches byte-order,
dtype-mapping and offset bugs that a C++-only round trip would hide.
"""

import sys

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file


def expected_tensors():
    return {
        "f64": torch.tensor([0.1, -2.5, 1e300], dtype=torch.float64),
        "f32": torch.tensor([[-1.0, -0.5, 0.0], [0.5, 1.0, 1.5]], dtype=torch.float32),
        # Values exactly representable in the half types, so no rounding choice is involved.
        "bf16": torch.tensor([1.0, -2.0, 0.5, 3.140625], dtype=torch.bfloat16),
        "f16": torch.tensor([65504.0, 2.0**-14, 1.0, -0.0], dtype=torch.float16),
        "i64": torch.tensor([-(2**63), 2**63 - 1, 0, 42], dtype=torch.int64),
        "i32": torch.tensor([[-(2**31), 2**31 - 1], [7, -7]], dtype=torch.int32),
        "i16": torch.tensor([-32768, 32767, 3], dtype=torch.int16),
        "i8": torch.tensor([-128, 127, -1], dtype=torch.int8),
        "u8": torch.tensor([0, 255, 128], dtype=torch.uint8),
        "bool": torch.tensor([True, False, True], dtype=torch.bool),
        "scalar": torch.tensor(7.25, dtype=torch.float32),
        "empty": torch.zeros(0, 3, dtype=torch.float32),
    }


def expected_metadata(writer):
    return {"writer": writer, "format": "pt", "note": "h\u00e9llo \u2713"}


def raw_bytes(t):
    # Bit-level comparison: torch.equal treats -0.0 == 0.0, and bf16 has no numpy dtype.
    return t.contiguous().reshape(-1).view(torch.uint8).tolist()


def check(path):
    errors = []
    got = load_file(path)
    want = expected_tensors()
    if set(got) != set(want):
        errors.append(f"tensor names differ: got {sorted(got)}, want {sorted(want)}")
    for name, w in want.items():
        g = got.get(name)
        if g is None:
            continue
        if g.dtype != w.dtype:
            errors.append(f"{name}: dtype {g.dtype}, want {w.dtype}")
        elif tuple(g.shape) != tuple(w.shape):
            errors.append(f"{name}: shape {tuple(g.shape)}, want {tuple(w.shape)}")
        elif raw_bytes(g) != raw_bytes(w):
            errors.append(f"{name}: values {g.tolist()}, want {w.tolist()}")
    with safe_open(path, framework="pt") as f:
        meta = f.metadata()
    if meta != expected_metadata("cpp"):
        errors.append(f"metadata {meta}, want {expected_metadata('cpp')}")
    if errors:
        print(f"safetensors_interop check {path}: " + "; ".join(errors), file=sys.stderr)
        return 1
    print(f"safetensors_interop check {path}: ok ({len(want)} tensors)")
    return 0


def main(argv):
    if len(argv) != 3 or argv[1] not in ("write", "check"):
        print("usage: safetensors_interop.py write OUT | check IN", file=sys.stderr)
        return 2
    if argv[1] == "write":
        save_file(expected_tensors(), argv[2], metadata=expected_metadata("python"))
        return 0
    return check(argv[2])


if __name__ == "__main__":
    sys.exit(main(sys.argv))
