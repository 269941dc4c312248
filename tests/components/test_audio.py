from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.io import wavfile

from components.config import DataConfig, load_config
from components.data import DataError, get_kind
from components.data.audio import spec_augment
from components.data.base import load_raw, save_raw, split_indices
from components.data.options import FSDD_PATTERN, parse
from components.formats import onnx_rt
from components.formats.onnx_rt import export_onnx
from components.models import build
from components.preprocess import fixed_length, log_mel, mel_filterbank, transform
from components.prune import prune_channels
from components.quantize import quantize_dynamic_int8, quantize_static_int8
from tests.conftest import require

pytestmark = pytest.mark.unit

KIND = get_kind("audio")
FSDD = Path(__file__).parents[3] / "shared" / "datasets" / "fsdd" / "recordings"
PARAMS = Path(__file__).parents[2] / "params.yaml"
SPEC = {"kind": "audio", "sample_rate": 8000, "seconds": 1.0, "n_fft": 256, "hop": 128, "n_mels": 40}


def tone(hz: float, seconds: float, rate: int = 8000, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(round(seconds * rate))) / rate
    return (amplitude * np.cos(2 * np.pi * hz * t)).astype(np.float32)


def write_fsdd_like(folder: Path) -> None:
    """Six files named like FSDD: digits 0/1, speakers ann/bob, indices 0..2, in three sample formats."""
    folder.mkdir(parents=True, exist_ok=True)
    for digit in (0, 1):
        for speaker in ("ann", "bob"):
            for index in range(3):
                x = tone(300 + 200 * digit, 0.3) * (1 + index) / 3
                wavfile.write(folder / f"{digit}_{speaker}_{index}.wav", 8000, (x * 32767).astype(np.int16))


# --- loading ---------------------------------------------------------------------------------------------------


def test_filename_labels_meta_and_sample_conversion(tmp_path):
    write_fsdd_like(tmp_path)
    wavfile.write(tmp_path / "1_cid_7.wav", 8000, np.array([-(2**31), 2**30, 0], dtype=np.int32))
    wavfile.write(tmp_path / "0_cid_8.wav", 16000, np.array([0.25, -0.75], dtype=np.float32))
    wavfile.write(tmp_path / "0_cid_9.wav", 8000, np.array([[16384, 0], [-32768, -32768]], dtype=np.int16))

    raw = KIND.load(str(tmp_path), parse(KIND.name, {"label_from": "filename", "pattern": FSDD_PATTERN}))

    files = raw.meta["file"].tolist()
    assert len(raw) == 15 and files[:3] == ["0_ann_0.wav", "0_ann_1.wav", "0_ann_2.wav"]
    assert raw.labels[files.index("1_bob_2.wav")] == "1"
    cid7 = files.index("1_cid_7.wav")
    assert raw.meta["speaker"][cid7] == "cid" and raw.meta["index"][cid7] == "7"
    assert sorted(raw.meta) == ["file", "index", "sample_rate", "speaker"]
    assert raw.meta["sample_rate"][files.index("0_cid_8.wav")] == 16000 and raw.info["sample_rates"] == [8000, 16000]
    # int32: x / 2^31; float: as is; int16 stereo: x / 2^15, channels averaged
    np.testing.assert_array_equal(raw.samples[files.index("1_cid_7.wav")], [-1.0, 0.5, 0.0])
    np.testing.assert_array_equal(raw.samples[files.index("0_cid_8.wav")], [0.25, -0.75])
    np.testing.assert_array_equal(raw.samples[files.index("0_cid_9.wav")], [0.25, -1.0])
    assert all(s.dtype == np.float32 and s.ndim == 1 for s in raw.samples)


def test_folder_labels(tmp_path):
    for label in ("yes", "no"):
        (tmp_path / label).mkdir()
        for i in range(2):
            wavfile.write(tmp_path / label / f"take{i}.wav", 8000, (tone(440, 0.1) * 1000).astype(np.int16))
    (tmp_path / "notes.txt").write_text("not audio")

    raw = KIND.load(str(tmp_path), parse(KIND.name, {"label_from": "folder"}))

    assert raw.labels.tolist() == ["no", "no", "yes", "yes"]
    assert raw.meta["file"].tolist() == ["no/take0.wav", "no/take1.wav", "yes/take0.wav", "yes/take1.wav"]
    assert len(raw.samples[0]) == 800


@pytest.mark.parametrize("options", [{"label_from": "folder"}, {}])
def test_train_val_test_folders_keep_their_splits(tmp_path, options):
    for k, split in enumerate(("train", "val", "test")):  # split/<label>/ with label_from folder, else split/
        for digit in (0, 1):
            folder = tmp_path / split / (str(digit) if options else "")
            folder.mkdir(parents=True, exist_ok=True)
            wavfile.write(folder / f"{digit}_ann_{k}.wav", 8000, tone(300 + 100 * digit + 10 * k, 0.1))

    raw = KIND.load(str(tmp_path), parse(KIND.name, options))

    assert raw.labels.tolist() == ["0", "1"] * 3
    assert raw.split.tolist() == ["test", "test", "train", "train", "val", "val"]
    with pytest.raises(DataError, match="test_rule and the source's own test/ folder"):
        KIND.load(str(tmp_path), parse(KIND.name, options | {"test_rule": {"field": "file", "values": ["x"]}}))


def test_corrupt_wav_names_the_file(tmp_path):
    write_fsdd_like(tmp_path)
    (tmp_path / "1_bob_9.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEgarbage")
    with pytest.raises(DataError, match=r"1_bob_9\.wav: unreadable or corrupt WAV"):
        KIND.load(str(tmp_path), parse(KIND.name, {}))


def test_unmatched_file_name_is_named(tmp_path):
    write_fsdd_like(tmp_path)
    wavfile.write(tmp_path / "seven-ann-1.wav", 8000, np.zeros(100, np.int16))
    with pytest.raises(DataError, match=r"seven-ann-1\.wav: file name does not match the pattern"):
        KIND.load(str(tmp_path), parse(KIND.name, {}))


@pytest.mark.parametrize(
    "options,match",
    [
        ({"pattern": r"^(?P<digit>\d)_.*\.wav$"}, "needs a named group 'label'"),
        ({"pattern": r"^(?P<label>\d"}, "not a valid regex"),
        ({"pattern": r"^(?P<label>\d)_(?P<file>.*)\.wav$"}, "groups 'file' and 'sample_rate' are reserved"),
    ],
)
def test_bad_options_are_named(tmp_path, options, match):
    write_fsdd_like(tmp_path)
    with pytest.raises(DataError, match=match):
        KIND.load(str(tmp_path), parse(KIND.name, options))


def test_an_option_value_outside_its_choices_names_the_option():
    with pytest.raises(ValueError, match=r"options\.label_from: Input should be 'filename' or 'folder'"):
        parse(KIND.name, {"label_from": "speaker"})


def test_empty_folder_and_missing_source(tmp_path):
    with pytest.raises(DataError, match="no .wav files"):
        KIND.load(str(tmp_path), parse(KIND.name, {}))
    with pytest.raises(DataError, match="expected a folder"):
        KIND.load(str(tmp_path / "absent"), parse(KIND.name, {}))


def test_raw_round_trip_is_pickle_free(tmp_path):
    write_fsdd_like(tmp_path / "wav")
    raw = KIND.load(str(tmp_path / "wav"), parse(KIND.name, {}))

    def write(path, arrays):
        assert all(a.dtype != object for a in arrays.values())
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, **arrays)

    save_raw(KIND, raw, tmp_path / "raw", write)
    back = load_raw(KIND, tmp_path / "raw")  # np.load(allow_pickle=False) inside

    packed = KIND.pack(raw.samples)
    assert packed["offsets"].tolist() == [2400 * i for i in range(13)] and packed["wave"].shape == (28800,)
    assert all(np.array_equal(a, b) for a, b in zip(back.samples, raw.samples))
    assert back.meta["speaker"].tolist() == raw.meta["speaker"].tolist() and back.info == raw.info


def test_unlabelled_folder_flat_or_nested_with_any_names(tmp_path):
    (tmp_path / "pool" / "day2").mkdir(parents=True)
    wavfile.write(tmp_path / "pool" / "recording one.wav", 8000, (tone(440, 0.2) * 32767).astype(np.int16))
    wavfile.write(tmp_path / "pool" / "day2" / "x.WAV", 16000, np.array([0.5, -0.25], np.float32))
    (tmp_path / "pool" / "readme.txt").write_text("not audio")

    pool = KIND.load_unlabelled(
        str(tmp_path / "pool"), parse(KIND.name, {"pattern": FSDD_PATTERN, "label_from": "filename"})
    )

    assert pool.meta["file"].tolist() == ["day2/x.WAV", "recording one.wav"]
    assert pool.meta["sample_rate"].tolist() == [16000, 8000] and pool.info["sample_rates"] == [8000, 16000]
    assert pool.labels.tolist() == ["", ""] and pool.info["unlabelled"] is True
    np.testing.assert_array_equal(pool.samples[0], [0.5, -0.25])
    assert len(pool.samples[1]) == 1600


def test_bad_unlabelled_audio_pools_name_the_file(tmp_path):
    (tmp_path / "pool" / "sub").mkdir(parents=True)
    (tmp_path / "pool" / "sub" / "broken.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEgarbage")
    with pytest.raises(DataError, match=r"sub/broken\.wav: unreadable or corrupt WAV"):
        KIND.load_unlabelled(str(tmp_path / "pool"), parse(KIND.name, {}))
    (tmp_path / "pool" / "sub" / "broken.wav").unlink()
    with pytest.raises(DataError, match=r"pool: no \.wav files in the folder or its sub-folders"):
        KIND.load_unlabelled(str(tmp_path / "pool"), parse(KIND.name, {}))
    with pytest.raises(DataError, match="expected a folder of .wav files"):
        KIND.load_unlabelled(str(tmp_path / "pool.wav"), parse(KIND.name, {}))


def test_unlabelled_pool_is_checked_against_the_labelled_rate_without_the_test_rule(tmp_path):
    from components.validation import raw_plan, validate

    write_fsdd_like(tmp_path / "labelled")
    (tmp_path / "pool").mkdir()
    wavfile.write(tmp_path / "pool" / "good.wav", 8000, tone(500, 0.3))
    wavfile.write(tmp_path / "pool" / "fast.wav", 16000, tone(500, 0.3))  # the labelled files are all 8 kHz
    options = {"test_rule": {"field": "index", "values": [0]}}  # pool files have no index: never split anyway
    cfg = load_config(PARAMS, "fsdd").model_copy(
        update={
            "data": DataConfig(name="voice", root=".", source="wav", kind="audio", options=options, classes=["0", "1"])
        }
    )
    raw = KIND.load(str(tmp_path / "labelled"), parse(KIND.name, options))
    pool = KIND.load_unlabelled(str(tmp_path / "pool"), parse(KIND.name, options), like=raw)

    report = validate(raw_plan(KIND, raw, cfg, pool=pool))

    assert [(f["table"], f["column"], f["examples"]) for f in report.failures] == [
        ("raw_unlabelled", "sample_rate", ["fast.wav: 16000"])
    ]
    assert "test_rule_field" not in KIND.describe(pool, parse(KIND.name, options))


# --- raw expectations ------------------------------------------------------------------------------------------


def test_raw_expectations_name_bad_files(tmp_path):
    from components.validation import raw_plan, validate

    write_fsdd_like(tmp_path)
    loud = np.clip(tone(500, 0.3, amplitude=2.0), -1, 1)  # a clipped file: ~2/3 of its samples at |x| = 1
    wavfile.write(tmp_path / "1_cid_0.wav", 8000, loud)
    wavfile.write(tmp_path / "0_cid_1.wav", 8000, tone(500, 0.3, amplitude=1e-4))  # near-silent
    wavfile.write(tmp_path / "0_cid_2.wav", 16000, tone(500, 0.3))  # wrong sample rate
    wavfile.write(tmp_path / "1_cid_3.wav", 8000, tone(500, 4.0))  # too long
    options = {
        "sample_rate": 8000,
        "min_seconds": 0.1,
        "max_seconds": 3.0,
        "max_clipped_fraction": 0.01,
        "min_rms": 0.001,
        "test_rule": {"field": "index", "values": [0, 1]},
    }
    cfg = load_config(PARAMS, "fsdd").model_copy(
        update={
            "data": DataConfig(name="voice", root=".", source="wav", kind="audio", options=options, classes=["0", "1"])
        }
    )
    raw = KIND.load(str(tmp_path), parse(KIND.name, options))

    report = validate(raw_plan(KIND, raw, cfg))

    failed = {f["column"]: f for f in report.failures}
    assert sorted(failed) == ["clipped_fraction", "duration_s", "rms", "sample_rate"]
    assert failed["clipped_fraction"]["examples"][0].startswith("1_cid_0.wav: 0.6")
    assert failed["rms"]["examples"][0].startswith("0_cid_1.wav: 7.0710")  # a cosine's RMS: 1e-4 / sqrt(2)
    assert failed["sample_rate"]["examples"] == ["0_cid_2.wav: 16000"]
    assert failed["duration_s"]["examples"] == ["1_cid_3.wav: 4.0"]


def test_split_rule_field_must_exist_for_every_file(tmp_path):
    from components.validation import raw_plan, validate

    for name in ("a_0.wav", "b.wav"):  # b.wav has no index: the pattern's optional group stays empty
        wavfile.write(tmp_path / name, 8000, tone(500, 0.3))
    options = {"pattern": r"^(?P<label>[ab])(_(?P<index>\d+))?\.wav$", "test_rule": {"field": "index", "values": [0]}}
    cfg = load_config(PARAMS, "fsdd").model_copy(
        update={
            "data": DataConfig(name="voice", root=".", source="wav", kind="audio", options=options, classes=["a", "b"])
        }
    )
    raw = KIND.load(str(tmp_path), parse(KIND.name, options))

    report = validate(raw_plan(KIND, raw, cfg))

    assert [(f["expectation"], f["column"], f["unexpected_count"]) for f in report.failures] == [
        ("expect_column_values_to_not_be_null", "test_rule_field", 1)
    ]
    assert raw.split.tolist() == ["test", ""]
    with pytest.raises(DataError, match="test_rule.field 'speaker' is not a meta column"):
        KIND.load(str(tmp_path), parse(KIND.name, options | {"test_rule": {"field": "speaker", "values": [0]}}))
    with pytest.raises(DataError, match="no file matches"):
        KIND.load(str(tmp_path), parse(KIND.name, options | {"test_rule": {"field": "index", "values": [7]}}))


# --- preprocessing ---------------------------------------------------------------------------------------------


def test_fixed_length_centres_short_and_crops_long_waves():
    spec = {"sample_rate": 4, "seconds": 1.0}  # 4 samples; an odd sample left over goes to the end
    out = fixed_length(
        spec,
        [np.array([1, 2], np.float32), np.arange(1, 8, dtype=np.float32), np.zeros(0), np.array([1, 2, 3], np.float32)],
    )
    assert out.tolist() == [[0, 1, 2, 0], [2, 3, 4, 5], [0, 0, 0, 0], [1, 2, 3, 0]]
    assert out.dtype == np.float32


def test_tone_energy_lands_in_its_mel_band():
    # sr 8000, n_fft 256: bins every 31.25 Hz, so 1000 Hz is bin 32 exactly. HTK mel: mel(4000 Hz) = 2146.06, so
    # 42 edges are 52.343 mel apart; band 18 peaks at mel 19 * 52.343 = 994.5 (991.8 Hz) and spans 915.0-1072.2 Hz.
    # A periodic Hann window (sum 128) turns a 0.5-amplitude cosine on bin 32 into |X| = 0.25 * 128 = 32 there
    # and 0.25 * 64 = 16 on bins 31 and 33: power 1024, 256, 256. Band 18 weights them
    # (1072.2 - 1000) / 80.4 = 0.898, (968.75 - 915.0) / 76.8 = 0.700 and (1072.2 - 1031.25) / 80.4 = 0.509:
    # 0.898 * 1024 + (0.700 + 0.509) * 256 = 1229.
    x = tone(1000, 1.0)

    lm = log_mel(SPEC, x[None])

    assert lm.shape == (1, 40, 1 + 8000 // 128) == (1, 40, 63)
    inner = lm[0, :, 2:-2]  # the first and last frames overlap the zero padding
    assert (inner.argmax(axis=0) == 18).all()
    np.testing.assert_allclose(np.exp(inner[18]), 1229, rtol=0.005)
    silent = np.delete(inner, [17, 18, 19], axis=0)
    np.testing.assert_allclose(silent, np.log(1e-6), atol=1e-3)  # no other band sees the tone


def test_mel_filterbank_is_triangular_on_the_mel_scale():
    fb = mel_filterbank(8000, 256, 40, 0.0, 4000.0)
    assert fb.shape == (40, 129) and fb.min() == 0.0 and fb.max() <= 1.0
    assert (fb.sum(axis=1) > 0).all()  # every band covers at least one FFT bin
    centres = fb.argmax(axis=1) * 31.25
    assert np.all(np.diff(centres) >= 0) and centres[18] == 1000.0  # bin 32 is closest to band 18's 991.8 Hz


def test_fit_normalises_with_train_statistics(tmp_path):
    write_fsdd_like(tmp_path)
    raw = KIND.load(str(tmp_path), parse(KIND.name, {}))
    options = {"seconds": 0.5, "n_fft": 128, "hop": 64, "n_mels": 20}

    spec = KIND.fit(raw, parse(KIND.name, options))
    x = transform(spec, raw.samples)

    assert spec["input_shape"] == [1, 20, 1 + 4000 // 64] and spec["input_dtype"] == "float32"
    assert {k: spec[k] for k in ("sample_rate", "n_fft", "hop", "n_mels", "seconds")} == {
        "sample_rate": 8000,
        "n_fft": 128,
        "hop": 64,
        "n_mels": 20,
        "seconds": 0.5,
    }
    assert x.dtype == np.float32 and x.shape == (12, 1, 20, 63)
    assert abs(float(x.mean())) < 1e-4 and abs(float(x.std()) - 1) < 1e-3
    other = transform(spec, [tone(300, 0.3)])  # new data is normalised with train's numbers, not its own
    assert abs(float(other.mean())) > 1e-3


def test_mfcc_is_the_orthonormal_dct_of_the_log_mels_in_mlperf_tinys_kws_framing(tmp_path):
    from components.preprocess import audio_features, dct_matrix

    d = dct_matrix(40, 40)
    np.testing.assert_allclose(d @ d.T, np.eye(40), atol=1e-5)  # orthonormal: nothing lost, nothing scaled
    spec = SPEC | {"n_fft": 320, "hop": 160, "center": False, "features": "mfcc", "n_mfcc": 10}
    x = tone(1000, 1.0)[None]
    mfcc = audio_features(spec, x)
    lm = log_mel(spec, x)
    assert mfcc.shape == (1, 10, 49) and lm.shape == (1, 40, 49)  # 1 + (8000 - 320) // 160 frames
    # coefficient 0 is the frame's mean log-mel times sqrt(40); coefficient 1 weighs low bands against high ones
    np.testing.assert_allclose(mfcc[0, 0], lm[0].mean(axis=0) * np.sqrt(40), rtol=1e-4)
    np.testing.assert_allclose(mfcc[0, 1], d[1] @ lm[0], rtol=1e-4, atol=1e-4)

    write_fsdd_like(tmp_path)
    raw = KIND.load(str(tmp_path), parse(KIND.name, {}))
    options = {"n_fft": 320, "hop": 160, "center": False, "features": "mfcc", "n_mfcc": 10}
    spec = KIND.fit(raw, parse(KIND.name, options))
    assert spec["input_shape"] == [1, 10, 49] and transform(spec, raw.samples).shape == (12, 1, 10, 49)
    with pytest.raises(DataError, match="n_mfcc=50"):
        KIND.fit(raw, parse(KIND.name, options | {"n_mfcc": 50}))


def test_spec_augment_shifts_and_masks_only():
    x = torch.arange(2 * 1 * 4 * 10, dtype=torch.float32).reshape(2, 1, 4, 10) + 1
    g = torch.Generator().manual_seed(0)

    same = spec_augment(x, g, max_shift=0, max_time_mask=0, max_freq_mask=0)
    out = spec_augment(x, torch.Generator().manual_seed(1), max_shift=3, max_time_mask=2, max_freq_mask=1)

    assert torch.equal(same, x)
    assert out.shape == x.shape
    for i in range(2):  # every value left is one of the sample's own (rolled in time), the rest masked to 0
        kept = out[i][out[i] != 0]
        assert set(kept.tolist()) <= set(x[i].flatten().tolist()) and len(kept) >= 40 - 2 * 4 - 10


# --- FSDD's conventional split (real data) ---------------------------------------------------------------------


def test_fsdd_split_rule_on_real_data():
    require(FSDD.is_dir(), f"FSDD is not available at {FSDD} (../shared/datasets is absent)")
    options = load_config(PARAMS, "fsdd").data.options
    raw = KIND.load(str(FSDD), parse(KIND.name, options))

    idx, dropped = split_indices(raw, [str(i) for i in range(10)], 0.15, 0.2, 42)

    assert len(raw) == 3000 and (raw.split == "test").sum() == 300 and dropped == 0
    test_index = raw.meta["index"][idx["test"]].astype(int)
    assert set(test_index) == {0, 1, 2, 3, 4}
    pairs = {(d, s) for d in raw.labels for s in raw.meta["speaker"]}
    assert len(pairs) == 60  # 10 digits x 6 speakers, each with exactly five test recordings
    test = set(zip(raw.labels[idx["test"]], raw.meta["speaker"][idx["test"]], test_index))
    assert len(test) == 300
    rest = np.concatenate([idx["train"], idx["val"]])
    assert (raw.meta["index"][rest].astype(int) >= 5).all() and len(rest) == 2700


# --- the audio models through pruning, export and ONNX Runtime -------------------------------------------------


@pytest.mark.parametrize(
    "role,width,channels_before,channels_after",
    [
        ("teacher", 64, [64, 64, 64, 128, 128], [48, 48, 48, 96, 96]),
        ("student", 16, [16, 32, 32], [12, 24, 24]),
    ],
)
def test_models_prune_export_and_quantize(tmp_path, role, width, channels_before, channels_after):
    spec = dict(SPEC, input_shape=[1, 40, 63])
    x = np.random.default_rng(0).standard_normal((16, 1, 40, 63)).astype(np.float32)
    model = build("audio", role, spec, 10, width, seed=0).eval()

    pruned, report = prune_channels(model, torch.from_numpy(x[:2]), 0.25)
    info = export_onnx(pruned, x, tmp_path / "fp32.onnx")
    static = quantize_static_int8(info.path, tmp_path / "static.onnx", x)
    dynamic = quantize_dynamic_int8(info.path, tmp_path / "dynamic.onnx")

    assert report.channels_before == channels_before and report.channels_after == channels_after
    assert report.macs_after < report.macs_before
    expected = pruned(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(onnx_rt.predict(info.path, x[:5]), expected[:5], atol=1e-4)  # dynamic batch axis
    for q in (static, dynamic):
        out = onnx_rt.predict(q.path, x)
        assert out.shape == (16, 10) and np.isfinite(out).all()
        assert q.size_bytes < info.size_bytes


def test_predict_reads_wav_files_like_training_and_refuses_other_rates(tmp_path):
    from components.predict import read_input

    wavfile.write(tmp_path / "ok.wav", 8000, np.array([16384, -32768], dtype=np.int16))
    wavfile.write(tmp_path / "fast.wav", 16000, np.zeros(10, np.int16))

    x = read_input(dict(SPEC), str(tmp_path / "ok.wav"))

    assert x.dtype == np.float32 and x.tolist() == [0.5, -1.0]
    with pytest.raises(ValueError, match="sample rate 16000 Hz; the model expects 8000 Hz"):
        read_input(dict(SPEC), str(tmp_path / "fast.wav"))
