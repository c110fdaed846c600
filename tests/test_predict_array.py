"""mlnnkit.predict_array: the compiled, chunked forward pass of any Keras model."""

from __future__ import annotations

import numpy as np
import pytest

import mlnnkit
from mlnnkit.errors import UserError


def dense_net(sizes, seed=0, activation="tanh"):
    import keras

    keras.utils.set_random_seed(seed)
    inp = keras.Input((sizes[0],))
    a = inp
    for i, s in enumerate(sizes[1:]):
        a = keras.layers.Dense(s, activation=activation if i < len(sizes) - 2 else None)(a)
    return keras.Model(inp, a)


def test_matches_model_predict_with_nan_rows_and_a_partial_chunk(rng):
    model = dense_net([7, 32, 3])
    x = rng.normal(size=(1003, 7))  # float64 input, cast chunk by chunk
    bad = rng.random(1003) < 0.1
    x[bad, rng.integers(0, 7, bad.sum())] = np.nan
    x[11, 4] = np.inf
    bad[11] = True

    y = mlnnkit.predict_array(model, x, chunk_rows=100)  # 100 does not divide 1003

    assert y.shape == (1003, 3) and y.dtype == np.float32
    ref = model.predict(np.where(bad[:, None], 0.0, x).astype("float32"), verbose=0)
    np.testing.assert_allclose(y[~bad], ref[~bad], rtol=1e-5, atol=1e-6)
    assert np.isnan(y[bad]).all()
    assert np.isfinite(y[~bad]).all()


def test_result_does_not_depend_on_chunk_size_or_threads(rng):
    model = dense_net([5, 16, 16, 2])
    x = rng.normal(size=(777, 5)).astype("float32")
    a = mlnnkit.predict_array(model, x, chunk_rows=64, workers=1)
    b = mlnnkit.predict_array(model, x, chunk_rows=1000, workers=3)
    c = mlnnkit.predict_array(model, x)
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(a, c, rtol=1e-6, atol=1e-7)


def test_compiled_once_per_chunk_shape_and_reused(rng):
    from mlnnkit.predict import forward_for

    model = dense_net([4, 8, 1])
    fw = forward_for(model, 128)
    assert forward_for(model, 128) is fw
    for n in (1, 127, 128, 129, 1000):  # every size, partial chunks padded
        y = mlnnkit.predict_array(model, rng.normal(size=(n, 4)), chunk_rows=128)
        assert y.shape == (n, 1)
    assert fw.fn._cache_size() == 1  # one compiled program for chunks of 128 rows
    mlnnkit.predict_array(model, rng.normal(size=(10, 4)), chunk_rows=64)
    assert fw.fn._cache_size() == 2  # a second chunk size: one more, shared function


def test_uses_the_current_weights(rng):
    model = dense_net([3, 4, 1])
    x = rng.normal(size=(50, 3)).astype("float32")
    before = mlnnkit.predict_array(model, x)
    model.set_weights([w * 2 for w in model.get_weights()])
    after = mlnnkit.predict_array(model, x)
    np.testing.assert_allclose(after, model.predict(x, verbose=0), rtol=1e-5, atol=1e-6)
    assert not np.allclose(before, after)


def test_memory_mapped_input(tmp_path, rng):
    model = dense_net([6, 8, 2])
    x = rng.normal(size=(5000, 6)).astype("float32")
    np.save(tmp_path / "x.npy", x)
    xm = np.load(tmp_path / "x.npy", mmap_mode="r")
    np.testing.assert_array_equal(
        mlnnkit.predict_array(model, xm, chunk_rows=512), mlnnkit.predict_array(model, x, chunk_rows=512)
    )


def test_any_model_images_and_several_outputs(rng):
    import keras

    inp = keras.Input((8, 8, 1))
    h = keras.layers.Conv2D(4, 3, activation="relu")(inp)
    h = keras.layers.Flatten()(h)
    out1 = keras.layers.Dense(3, activation="softmax")(h)
    out2 = keras.layers.Dense(1)(h)
    model = keras.Model(inp, [out1, out2])
    x = rng.normal(size=(300, 8, 8, 1)).astype("float32")
    x[7, 3, 3, 0] = np.nan
    y1, y2 = mlnnkit.predict_array(model, x, chunk_rows=64)
    r1, r2 = model.predict(np.nan_to_num(x), verbose=0)
    ok = np.arange(300) != 7
    np.testing.assert_allclose(y1[ok], r1[ok], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(y2[ok], r2[ok], rtol=1e-5, atol=1e-5)
    assert np.isnan(y1[7]).all() and np.isnan(y2[7]).all()


def test_bad_input_is_a_user_error(rng):
    import keras

    model = dense_net([7, 4, 1])
    with pytest.raises(UserError, match="5 columns but the model takes 7 inputs"):
        mlnnkit.predict_array(model, rng.normal(size=(10, 5)))
    with pytest.raises(UserError, match="chunk_rows must be a positive"):
        mlnnkit.predict_array(model, rng.normal(size=(10, 7)), chunk_rows=0)
    a, b = keras.Input((2,)), keras.Input((3,))
    two = keras.Model([a, b], keras.layers.Dense(1)(keras.layers.Concatenate()([a, b])))
    with pytest.raises(UserError, match="2 inputs"):
        mlnnkit.predict_array(two, rng.normal(size=(10, 5)))
    assert mlnnkit.predict_array(model, np.zeros((0, 7))).shape == (0, 1)


def test_default_chunk_rows_follows_the_model_size():
    from mlnnkit.predict import default_chunk_rows

    pace = default_chunk_rows(dense_net([111, 111, 57, 111, 107]))
    small = default_chunk_rows(dense_net([7, 100, 1]))
    assert 1024 <= pace <= 4096  # big rows: chunks that stay in cache
    assert 4096 <= small <= 32768  # cheap rows: chunks big enough to hide the call cost
    assert small > pace
    # Depth does not shrink the chunk: what one op reads and writes counts, not the
    # whole program's bytes (a five-network chain got 256-row chunks, ~1.15x slower).
    deep = default_chunk_rows(dense_net([111] + [111, 57, 111] * 5 + [107]))
    assert deep >= pace


def test_predict_stream_writes_blocks_in_order_and_stops_on_a_reader_error(rng):
    from mlnnkit.predict import blocks_of, predict_stream

    model = dense_net([3, 5, 2])
    x = rng.normal(size=(1000, 3)).astype("float32")
    got = []
    n = predict_stream(model, blocks_of(x, 300), lambda i, y: got.append((i, y)), chunk_rows=128)
    assert n == 1000 and [i for i, _ in got] == [0, 300, 600, 900]
    np.testing.assert_array_equal(np.concatenate([y for _, y in got]), mlnnkit.predict_array(model, x))

    def failing():
        yield 0, x[:300]
        raise UserError("data.nc: block 2 unreadable")

    with pytest.raises(UserError, match="block 2 unreadable"):
        predict_stream(model, failing(), lambda i, y: None)


def test_predict_stream_stops_on_a_writer_error_and_reuses_buffers(rng):
    import threading

    from mlnnkit.predict import blocks_of, predict_stream

    model = dense_net([3, 5, 2])
    x = rng.normal(size=(5000, 3)).astype("float32")
    seen = []

    def write(i, y):
        seen.append(i)
        if i == 1000:
            raise OSError("disk full")

    before = threading.active_count()
    with pytest.raises(OSError, match="disk full"):
        predict_stream(model, blocks_of(x, 500), write, chunk_rows=128)
    assert seen == [0, 500, 1000]  # in order, and nothing written after the failure
    assert threading.active_count() == before  # the reader and the workers have ended

    ids = set()
    predict_stream(model, blocks_of(x, 500), lambda i, y: ids.add(y.ctypes.data), depth=1)
    assert len(ids) <= 3  # depth + 2 output buffers, reused block after block


def test_out_array(tmp_path, rng):
    model = dense_net([4, 6, 3])
    x = rng.normal(size=(700, 4)).astype("float32")
    out = np.lib.format.open_memmap(tmp_path / "y.npy", mode="w+", dtype="float32", shape=(700, 3))
    assert mlnnkit.predict_array(model, x, chunk_rows=128, out=out) is out
    out.flush()
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), mlnnkit.predict_array(model, x))
    with pytest.raises(UserError, match="out must be"):
        mlnnkit.predict_array(model, x, out=np.empty((700, 2), "float32"))
