"""Golden tests of pixel semantics and of every transfer syntax, on images with known values."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import JPEG2000, JPEG2000Lossless, JPEGLSLossless, JPEGLSNearLossless, RLELossless

from fedscan.common.errors import Rejected
from fedscan.common.ingest.dicom import DecodeOptions, decode_file, window_to_unit
from fedscan.common.ingest.rejections import Reason
from tests import dicom_factory as factory

STORED = np.tile(np.array([[0, 100], [200, 300]], dtype=np.uint16), (4, 4))  # 8×8


def linear_window(values: np.ndarray, center: float, width: float) -> np.ndarray:
    """PS3.3 C.11.2.1.2.1, written out with the output range [0, 1]."""
    out = (values - (center - 0.5)) / (width - 1) + 0.5
    out[values <= center - 0.5 - (width - 1) / 2] = 0.0
    out[values > center - 0.5 + (width - 1) / 2] = 1.0
    return out


def decode(path: Path, **options: object) -> np.ndarray:
    return decode_file(path, DecodeOptions(**options)).frames


def psnr(reference: np.ndarray, other: np.ndarray) -> float:
    mse = float(np.mean((reference.astype(np.float64) - other) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(1.0 / mse)


def test_linear_window_follows_the_standard_at_its_edges() -> None:
    values = np.array([-1000.0, 39.5 - 50, 40.0, 39.5 + 50, 39.5 + 50.01, 5000.0])
    assert np.allclose(window_to_unit(values, 40.0, 101.0), linear_window(values, 40.0, 101.0))
    assert window_to_unit(values, 40.0, 101.0)[[0, -1]].tolist() == [0.0, 1.0]


def test_slope_and_intercept_are_applied_exactly_once(tmp_path: Path) -> None:
    path = factory.write(
        factory.image_dataset(STORED, slope=2.0, intercept=-100.0, window=(200.0, 601.0)),
        tmp_path / "ct.dcm",
    )
    expected = linear_window(STORED * 2.0 - 100.0, 200.0, 601.0)
    assert np.allclose(decode(path)[0, 0], expected, atol=1e-6)
    twice = linear_window((STORED * 2.0 - 100.0) * 2.0 - 100.0, 200.0, 601.0)
    assert not np.allclose(decode(path)[0, 0], twice, atol=1e-3)


def test_monochrome1_is_inverted_after_the_window(tmp_path: Path) -> None:
    ds = factory.image_dataset(STORED, photometric="MONOCHROME1", window=(150.0, 301.0))
    frames = decode(factory.write(ds, tmp_path / "m1.dcm"))
    assert np.allclose(
        frames[0, 0], 1.0 - linear_window(STORED.astype(float), 150.0, 301.0), atol=1e-6
    )


def test_signed_pixels_are_read_as_signed(tmp_path: Path) -> None:
    stored = np.tile(np.array([[-1000, -10], [0, 1200]], dtype=np.int16), (4, 4))
    frames = decode(
        factory.write(factory.image_dataset(stored, window=(0.0, 2001.0)), tmp_path / "s.dcm")
    )
    assert np.allclose(frames[0, 0], linear_window(stored.astype(float), 0.0, 2001.0), atol=1e-6)
    assert (
        frames[0, 0, 0, 0] < 0.001 and 0.49 < frames[0, 0, 1, 0] < 0.51
    )  # unsigned would read 64536 → 1.0


def test_without_a_window_the_range_is_stretched_to_unit(tmp_path: Path) -> None:
    stored = np.arange(64 * 64, dtype=np.uint16).reshape(64, 64)
    frames = decode(factory.write(factory.image_dataset(stored), tmp_path / "plain.dcm"))
    assert frames.min() == 0.0 and frames.max() == 1.0
    assert np.all(np.diff(frames[0, 0].ravel()) >= 0)  # monotonic in the stored value


def test_rgb_becomes_luminance_or_stays_rgb(tmp_path: Path) -> None:
    rgb = np.zeros((8, 8, 3), dtype=np.uint8)
    rgb[..., 0], rgb[:4, :, 1] = 255, 255
    path = factory.write(factory.image_dataset(rgb, photometric="RGB"), tmp_path / "rgb.dcm")
    gray = decode(path)
    assert gray.shape == (1, 1, 8, 8)
    assert np.allclose(gray[0, 0, 0, 0], 0.299 + 0.587) and np.allclose(gray[0, 0, 7, 0], 0.299)
    assert decode(path, channels=3).shape == (1, 3, 8, 8)


def test_multi_frame_policy_middle_or_every_frame(tmp_path: Path) -> None:
    stack = np.stack([np.arange(64, dtype=np.uint16).reshape(8, 8) + 100 * i for i in range(3)])
    path = factory.write(factory.image_dataset(stack, window=(150.0, 400.0)), tmp_path / "mf.dcm")
    middle, every = decode(path, frames="middle"), decode(path, frames="all")
    assert middle.shape == (1, 1, 8, 8) and every.shape == (3, 1, 8, 8)
    assert np.array_equal(middle[0], every[1])


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    """A 12-bit 64×64 CT with a fixed window, and its decoded frames."""
    rows, cols = np.mgrid[0:64, 0:64]
    stored = (rows * 40 + cols * 20 + np.random.default_rng(0).integers(0, 300, (64, 64))).astype(
        np.uint16
    )
    path = factory.write(
        factory.image_dataset(stored, bits_stored=12, window=(1800.0, 3000.0)),
        tmp_path_factory.mktemp("ref") / "reference.dcm",
    )
    return path, decode(path)


LOSSLESS = {
    "rle": lambda ds, p: factory.compressed_copy(ds, p, RLELossless),
    "jpeg-ls": lambda ds, p: factory.compressed_copy(ds, p, JPEGLSLossless),
    "jpeg2000": lambda ds, p: factory.compressed_copy(ds, p, JPEG2000Lossless),
    "jpeg-lossless-p14": lambda ds, p: factory.gdcm_copy(
        Path(ds.filename), p, "JPEGLosslessProcess14"
    ),
    "jpeg-lossless-sv1": lambda ds, p: factory.gdcm_copy(
        Path(ds.filename), p, "JPEGLosslessProcess14_1"
    ),
    "deflated": lambda ds, p: factory.gdcm_copy(
        Path(ds.filename), p, "DeflatedExplicitVRLittleEndian"
    ),
}


@pytest.mark.parametrize("codec", sorted(LOSSLESS))
def test_lossless_syntaxes_decode_to_the_reference_exactly(
    codec: str, reference: tuple[Path, np.ndarray], tmp_path: Path
) -> None:
    import pydicom

    source, expected = reference
    encoded = LOSSLESS[codec](pydicom.dcmread(source), tmp_path / f"{codec}.dcm")
    assert (
        pydicom.dcmread(encoded).file_meta.TransferSyntaxUID
        != pydicom.dcmread(source).file_meta.TransferSyntaxUID
    )
    assert np.array_equal(decode(encoded), expected)


def test_htj2k_decodes_to_its_reference_exactly(tmp_path: Path) -> None:
    window = (1500.0, 3000.0)
    plain = factory.write(
        factory.image_dataset(factory.htj2k_reference(), bits_stored=12, window=window),
        tmp_path / "plain.dcm",
    )
    assert np.array_equal(decode(factory.htj2k_copy(tmp_path / "htj2k.dcm", window)), decode(plain))


@pytest.mark.parametrize(
    "variant",
    [
        "MR_small_bigendian.dcm",
        "MR_small_expb.dcm",
        "MR_small_implicit.dcm",
        "MR_small_RLE.dcm",
        "MR_small_jp2klossless.dcm",
        "MR_small_jpeg_ls_lossless.dcm",
    ],
)
def test_pydicom_shipped_encodings_match_their_little_endian_original(variant: str) -> None:
    original = decode(Path(get_testdata_file("MR_small.dcm")))
    assert np.array_equal(decode(Path(get_testdata_file(variant))), original)


def test_lossy_syntaxes_stay_above_40_db(
    reference: tuple[Path, np.ndarray], tmp_path: Path
) -> None:
    import pydicom

    source, expected = reference
    ds = pydicom.dcmread(source)
    lossy = {
        "jpeg2000": factory.compressed_copy(ds, tmp_path / "j2k.dcm", JPEG2000, j2k_psnr=[60.0]),
        "jpeg-ls-near": factory.compressed_copy(
            ds, tmp_path / "jlsn.dcm", JPEGLSNearLossless, jls_error=2
        ),
    }
    for name, path in lossy.items():
        assert psnr(expected, decode(path)) >= 40.0, name
    eight_bit = factory.write(
        factory.image_dataset((ds.pixel_array >> 4).astype(np.uint8)), tmp_path / "8.dcm"
    )
    baseline = factory.jpeg_baseline_copy(
        pydicom.dcmread(eight_bit), tmp_path / "jpeg.dcm", quality=95
    )
    assert pydicom.dcmread(baseline).file_meta.TransferSyntaxUID.name == "JPEG Baseline (Process 1)"
    assert psnr(decode(eight_bit), decode(baseline)) >= 40.0


def test_twelve_bit_jpeg_extended_names_the_decoder_to_install() -> None:
    with pytest.raises(Rejected) as caught:
        decode_file(Path(get_testdata_file("JPGExtended.dcm")), DecodeOptions())
    assert caught.value.reason is Reason.DECODER_MISSING
    assert "pylibjpeg-libjpeg" in str(caught.value)


def test_declared_size_beyond_the_limit_is_rejected_before_decoding(tmp_path: Path) -> None:
    import pydicom

    path = factory.write(factory.image_dataset(STORED), tmp_path / "big.dcm")
    ds = pydicom.dcmread(path)
    ds.Rows, ds.Columns, ds.NumberOfFrames = 60000, 60000, 4000  # 28 TB of pixels declared
    factory.write(ds, path)
    with pytest.raises(Rejected) as caught:
        decode_file(path, DecodeOptions())
    assert caught.value.reason is Reason.OUT_OF_RANGE


def test_a_missing_decoder_is_named_in_the_rejection(monkeypatch: pytest.MonkeyPatch) -> None:
    from fedscan.common.ingest import dicom_header

    class Unavailable:
        is_available, available_plugins = False, ()

    monkeypatch.setattr(dicom_header, "get_decoder", lambda tsyntax: Unavailable())
    with pytest.raises(Rejected) as caught:
        decode_file(Path(get_testdata_file("MR_small_jpeg_ls_lossless.dcm")), DecodeOptions())
    assert caught.value.reason is Reason.DECODER_MISSING
    assert "JPEG-LS Lossless" in str(caught.value) and "install pyjpegls" in str(caught.value)
