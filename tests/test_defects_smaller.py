"""Issue #17, the smaller ones on the training side: the offline keras.applications error
of `transfer`, finetune's range and NaN messages, finetune -v and Ctrl-C."""

from __future__ import annotations

import os
from pathlib import Path

import keras
import pytest

from mlnnkit import transfer as tl
from mlnnkit.errors import UserError

MOBILENET_NO_TOP = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"


def test_offline_application_error_is_whole_and_suggests_weights_none(monkeypatch):
    from keras.src.backend import config as keras_config

    if (Path(keras_config.keras_home()) / "models" / MOBILENET_NO_TOP).exists():
        pytest.skip("the MobileNetV2 weights are cached here: nothing to download")
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")  # offline, for sure: nothing listens
    for var in ("no_proxy", "NO_PROXY"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(UserError) as err:
        tl.application_base("MobileNetV2", (32, 32), "imagenet")
    msg = str(err.value)
    assert "--weights none" in msg
    assert f"put {MOBILENET_NO_TOP} in ~/.keras/models/" in msg  # the whole file name
    reason = msg.split("cannot download its ImageNet weights (", 1)[1].split(");", 1)[0]
    assert "URL fetch failure" not in reason and "[Errno" in reason, reason
    keras.backend.clear_session()
