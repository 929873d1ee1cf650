"""FaceParser's constructor arguments (issue 16): a bad value is a ValueError naming the argument, raised before
any model is loaded or any global setting (torch's thread count) is changed."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fpliif.infer.parser import FaceParser
from oracle import Oracle

BAD = [
    ("threads", -1),
    ("threads", 0),
    ("threads", 2.5),
    ("threads", "2"),
    ("threads", True),
    ("threads", 10**6),
    ("batch_size", 0),
    ("batch_size", "8"),
    ("batch_size", 1.5),
    ("input_size", 0),
    ("input_size", 4),
    ("input_size", 10**5),
    ("input_size", "64"),
    ("max_decode_size", 0),
    ("max_decode_size", 7),
    ("max_decode_size", "big"),
    ("max_queries", 0),
    ("max_queries", None),
    ("feather", -1),
    ("feather", 2),
    ("feather", math.nan),
    ("context", 0.5),
    ("pad", "reflect"),
]


@pytest.mark.parametrize(("name", "value"), BAD)
def test_bad_constructor_argument_is_a_value_error_naming_it(name, value):
    threads = torch.get_num_threads()
    with pytest.raises(ValueError, match=f"^{name}: expected") as info:
        FaceParser(Oracle(), **{name: value})
    assert repr(value)[:20] in str(info.value)
    assert torch.get_num_threads() == threads  # nothing was set on the way


@pytest.mark.parametrize("factory", [FaceParser.from_pretrained, FaceParser.from_onnx])
def test_bad_argument_is_refused_before_loading_weights(tmp_path, factory):
    missing = tmp_path / "missing.onnx"  # loading it would fail with another error
    with pytest.raises(ValueError, match="^threads: expected an integer in \\[1, "):
        factory(missing, threads=-1)


def test_valid_integer_arguments_are_kept():
    p = FaceParser(Oracle(), threads=1, batch_size=np.int64(3), input_size=64, max_decode_size=None, max_queries=99)
    assert (p.batch_size, p.input_size, p.max_decode_size, p.max_queries) == (3, 64, None, 99)
    assert type(p.batch_size) is int
