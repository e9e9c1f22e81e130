"""Series assembly: slice order from geometry, enhanced = single-frame, exact HU, every broken
series coded, labels and masks per series, the cache per series."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from fedscan.common.data.synth_ct_files import INTERCEPT, stored_values
from fedscan.common.errors import DataError
from fedscan.common.ingest.decode_pool import DecodePool, PoolSettings
from fedscan.common.ingest.dicom_header import DecodeLimits
from fedscan.common.ingest.labels import LabelSpec
from fedscan.common.ingest.rejections import Reason
from fedscan.common.ingest.series.assemble import assemble_values, ingest_volumes
from fedscan.common.ingest.series.geometry import SeriesLimits, plan_series
from fedscan.common.ingest.series.resample import to_canonical
from fedscan.common.ingest.series.survey import survey
from fedscan.common.ingest.walk import scan_files
from tests.series_factory import (
    GEOMETRY,
    LAYOUTS,
    edit,
    hu_volume,
    nodule_mask,
    settings,
    slice_files,
    write,
    write_labels,
    write_mask,
    write_seg,
)


def _assembled(site_dir: Path) -> np.ndarray:
    """The one series' modality values in the canonical frame, straight from assembly."""
    files, _ = scan_files(site_dir)
    found = survey(site_dir, files, DecodeLimits(), None)
    (members,) = found.series.values()
    plan = plan_series([s for m in members for s in m.slices], SeriesLimits())
    with DecodePool(PoolSettings(workers=0)) as pool:
        values = assemble_values(plan, site_dir, pool, DecodeLimits())
    assert isinstance(values, np.ndarray)
    return to_canonical(values, plan)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_layout_assembles_the_written_volume_exactly(layout: str, tmp_path: Path) -> None:
    hu = hu_volume()
    write(tmp_path, hu, layout=layout)
    # HU = slope · stored + intercept, exactly (slope 1, intercept −1024; whole numbers).
    expected = stored_values(hu).astype(np.float64) + INTERCEPT
    assert np.array_equal(_assembled(tmp_path), expected.astype(np.float32))


def test_shuffled_reversed_and_enhanced_series_give_the_same_samples(tmp_path: Path) -> None:
    hu = hu_volume(1)
    images = []
    for layout in LAYOUTS:
        site = tmp_path / layout
        write(site, hu, layout=layout)
        write_labels(site, [{"file": "CT0000", "label": 1}])
        samples, report = ingest_volumes(site, LabelSpec(), settings())
        assert report.accepted == 1, report.summary()
        images.append(samples.images)
    assert images[0].shape == (1, 1, 8, 16, 16)
    assert np.array_equal(images[0], images[1]) and np.array_equal(images[0], images[2])


def test_hu_is_slope_times_stored_plus_intercept_for_any_rescale(tmp_path: Path) -> None:
    hu = hu_volume(2)
    folder = write(tmp_path, hu)
    for path in slice_files(folder):
        edit(path, RescaleSlope=0.5, RescaleIntercept=-1000.25)
    expected = stored_values(hu).astype(np.float64) * 0.5 - 1000.25
    assert np.array_equal(_assembled(tmp_path), expected.astype(np.float32))


def _reason_of(site: Path, **limits: object) -> str | None:
    write_labels(site, [{"file": "CT0000", "label": 0}])
    _, report = ingest_volumes(site, LabelSpec(), settings(**limits))
    (record,) = report.series
    return record.reason


@pytest.mark.parametrize(
    ("broken", "code"),
    [
        ("missing-slice", Reason.SERIES_MISSING_SLICE),
        ("localizer", Reason.SERIES_LOCALIZER),
        ("duplicate-position", Reason.SERIES_DUPLICATE_POSITION),
    ],
)
def test_the_synthetic_broken_series_are_rejected_with_their_code(
    broken: str, code: Reason, tmp_path: Path
) -> None:
    write(tmp_path, hu_volume(), broken=broken)
    assert _reason_of(tmp_path) == code


def _shift_z(path: Path, mm: float) -> None:
    import pydicom

    position = [float(v) for v in pydicom.dcmread(path).ImagePositionPatient]
    edit(path, ImagePositionPatient=[position[0], position[1], position[2] + mm])


@pytest.mark.parametrize(
    ("change", "code"),
    [
        (lambda files: _shift_z(files[5], 1.5), Reason.SERIES_IRREGULAR_SPACING),
        (
            lambda files: edit(files[3], ImageOrientationPatient=[1, 0, 0, 0, 0.995, 0.0998]),
            Reason.SERIES_INCONSISTENT,
        ),
        (lambda files: edit(files[4], PixelSpacing=[6.5, 6.5]), Reason.SERIES_INCONSISTENT),
        (lambda files: edit(files[2], RescaleIntercept=-1000), Reason.SERIES_MIXED_PIXELS),
        (
            lambda files: [
                edit(f, ImageOrientationPatient=[0.7071, 0.7071, 0, -0.7071, 0.7071, 0])
                for f in files
            ],
            Reason.SERIES_OBLIQUE,
        ),
    ],
    ids=["irregular", "orientation", "spacing", "rescale", "oblique"],
)
def test_inconsistent_series_are_rejected_before_stacking(change, code, tmp_path: Path) -> None:
    folder = write(tmp_path, hu_volume())
    change(slice_files(folder))
    assert _reason_of(tmp_path) == code


def test_too_few_slices_and_a_series_beyond_the_limits_are_refused(tmp_path: Path) -> None:
    write(tmp_path, hu_volume())
    assert _reason_of(tmp_path, limits=SeriesLimits(min_slices=13)) == Reason.SERIES_TOO_FEW_SLICES
    # 12 × 24 × 24 voxels declared: above the limit, refused before anything is decoded.
    limits = SeriesLimits(max_voxels=12 * 24 * 24 - 1)
    assert _reason_of(tmp_path, limits=limits) == Reason.OUT_OF_RANGE


def test_slices_without_geometry_join_no_series_and_say_why(tmp_path: Path) -> None:
    folder = write(tmp_path, hu_volume())
    for path in slice_files(folder):
        edit(path, ImagePositionPatient=None)
    write_labels(tmp_path, [{"file": "CT0000", "label": 0}])
    samples, report = ingest_volumes(tmp_path, LabelSpec(), settings())
    assert len(samples.labels) == 0 and report.series == []
    assert report.rejected_by_reason() == {"SERIES_NO_GEOMETRY": GEOMETRY.slices}


@pytest.mark.parametrize(
    ("key", "column", "value"),
    [
        ("path", "file", "CT0000"),
        ("SeriesInstanceUID", "series_instance_uid", None),
        ("PatientID", "patient_id", "S00P00000"),
    ],
)
def test_series_are_labelled_by_folder_series_uid_or_patient(
    key: str, column: str, value: str | None, tmp_path: Path
) -> None:
    import pydicom

    folder = write(tmp_path, hu_volume())
    if value is None:
        value = str(pydicom.dcmread(slice_files(folder)[0]).SeriesInstanceUID)
    write_labels(tmp_path, [{column: value, "label": 1}])
    samples, report = ingest_volumes(tmp_path, LabelSpec(key=key), settings())
    assert list(samples.labels) == [1] and samples.groups == ("S00P00000",)
    with pytest.raises(DataError, match="per series"):
        ingest_volumes(tmp_path, LabelSpec(key="SOPInstanceUID"), settings())


@pytest.mark.parametrize("kind", ["npy", "nii.gz", "seg"])
def test_npy_nifti_and_seg_masks_fit_to_the_same_voxels(kind: str, tmp_path: Path) -> None:
    reference = tmp_path / "reference"
    write(reference, hu_volume())
    write_mask(reference / "masks" / "m.npy", nodule_mask())
    write_labels(reference, [{"file": "CT0000", "mask": "masks/m.npy"}])
    expected, _ = ingest_volumes(reference, LabelSpec(), settings(), masks=True)
    site = tmp_path / kind
    folder = write(site, hu_volume(), layout="shuffled-reversed" if kind == "seg" else "descending")
    name = f"masks/m.{'dcm' if kind == 'seg' else kind}"
    if kind == "seg":
        (site / "masks").mkdir()
        write_seg(site / name, folder, nodule_mask())
    else:
        write_mask(site / name, nodule_mask())
    write_labels(site, [{"file": "CT0000", "mask": name}])
    samples, report = ingest_volumes(site, LabelSpec(), settings(), masks=True)
    assert report.accepted == 1, report.summary()
    assert samples.masks is not None and expected.masks is not None
    assert samples.masks.sum() > 0 and np.array_equal(samples.masks, expected.masks)
    assert list(samples.labels) == [1]


def test_masks_off_the_series_geometry_are_rejected_before_reading_voxels(tmp_path: Path) -> None:
    import nibabel

    write(tmp_path, hu_volume())
    np.save(tmp_path / "short.npy", nodule_mask()[:-1])
    shifted = GEOMETRY.affine_ras()
    shifted[2, 3] += GEOMETRY.slice_mm / 2  # half a slice off
    nibabel.save(
        nibabel.Nifti1Image(nodule_mask().transpose(2, 1, 0), shifted), tmp_path / "off.nii"
    )
    labelmap = nodule_mask() * 3
    np.save(tmp_path / "three.npy", labelmap)
    codes = {}
    for name in ("short.npy", "off.nii", "three.npy"):
        write_labels(tmp_path, [{"file": "CT0000", "mask": name}])
        scheme = None
        if name == "three.npy":
            from fedscan.common.tasks import LabelScheme

            scheme = LabelScheme("segmentation", ("a", "b"))
        _, report = ingest_volumes(tmp_path, LabelSpec(), settings(), masks=True, scheme=scheme)
        codes[name] = report.series[0].reason
    assert codes == {
        "short.npy": Reason.MASK_MISMATCH,
        "off.nii": Reason.MASK_MISMATCH,
        "three.npy": Reason.MASK_UNKNOWN_LABEL,
    }


def test_the_cache_holds_one_entry_per_series_and_a_changed_slice_redoes_only_its_series(
    tmp_path: Path,
) -> None:
    site, cache = tmp_path / "site", str(tmp_path / "cache")
    for case in range(3):
        write(site, hu_volume(case), case=case)
    write_labels(site, [{"file": f"CT{case:04d}", "label": case % 2} for case in range(3)])
    cold, report = ingest_volumes(site, LabelSpec(), settings(cache))
    assert report.cache is not None and report.cache["written"] == 3
    warm, report = ingest_volumes(site, LabelSpec(), settings(cache))
    assert report.cache is not None and (report.cache["hits"], report.cache["misses"]) == (3, 0)
    assert np.array_equal(cold.images, warm.images)
    _brighten(slice_files(site / "CT0001")[4])  # one slice of one series
    changed, report = ingest_volumes(site, LabelSpec(), settings(cache))
    assert report.cache is not None and (report.cache["hits"], report.cache["misses"]) == (2, 1)
    assert np.array_equal(changed.images[[0, 2]], cold.images[[0, 2]])
    assert not np.array_equal(changed.images[1], cold.images[1])


def _brighten(path: Path) -> None:
    import pydicom

    ds = pydicom.dcmread(path)
    ds.PixelData = (ds.pixel_array + 400).astype(np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)


def test_moving_a_series_folder_keeps_its_cache_entry(tmp_path: Path) -> None:
    site, cache = tmp_path / "site", str(tmp_path / "cache")
    write(site, hu_volume())
    write_labels(site, [{"file": "CT0000", "label": 1}])
    ingest_volumes(site, LabelSpec(), settings(cache))
    shutil.move(site / "CT0000", site / "moved")
    write_labels(site, [{"file": "moved", "label": 1}])
    samples, report = ingest_volumes(site, LabelSpec(), settings(cache))
    assert report.cache is not None and report.cache["hits"] == 1 and list(samples.labels) == [1]


def test_intensity_policies_map_ct_windows_and_mr_percentiles_and_refuse_nonsense() -> None:
    from fedscan.common.errors import ConfigError
    from fedscan.common.ingest.series.intensity import IntensityPolicy

    hu = np.array([-1000.0, -600.0, 40.0, 400.0, 3000.0])
    assert np.allclose(
        IntensityPolicy.parse("auto").apply(hu, "CT"), [0, 0.4 / 1.4, 1.04 / 1.4, 1, 1]
    )
    lung = IntensityPolicy.parse("lung")  # window 1500 / level -600: -1350..150 HU
    assert (lung.low, lung.high) == (-1350.0, 150.0)
    assert IntensityPolicy.parse("hu:-100,100").apply(
        np.array([-200.0, 0.0, 50.0]), "CT"
    ).tolist() == [0.0, 0.5, 0.75]
    mr = np.arange(101, dtype=np.float64) * 7.0  # arbitrary MR units: percentiles, not values
    unit = IntensityPolicy.parse("auto").apply(mr, "MR")
    assert unit[1] == 0.0 and unit[99] == 1.0 and 0.49 < unit[50] < 0.51
    assert IntensityPolicy.parse("percentile:5,95").apply(np.ones(10), "MR").max() == 0.0
    for bad in ("hu:5", "hu:10,0", "percentile:-1,50", "window"):
        with pytest.raises(ConfigError, match="intensity"):
            IntensityPolicy.parse(bad)


def test_a_site_s_volume_settings_are_checked_when_its_config_is_read() -> None:
    from fedscan.common.data.sources import FolderSource
    from fedscan.common.errors import ConfigError

    with pytest.raises(ConfigError, match="intensity"):
        FolderSource("a", "/nowhere", intensity="lungs")
    with pytest.raises(ConfigError, match="min-slices"):
        FolderSource("a", "/nowhere", min_slices=1)
