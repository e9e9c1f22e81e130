"""Starting weights matched to a model by name and shape: loaded, new or ignored, each parameter
once; runs of loaded parameters shown as one row; the record round-trips through JSON."""

from __future__ import annotations

from fedscan.common.models.weight_match import (
    IGNORED,
    LOADED,
    NEW,
    Entry,
    WeightMatch,
    match_shapes,
    nothing_matched,
)

MODEL = {"a.weight": (2, 3), "a.bias": (2,), "b.weight": (4, 2), "b.bias": (4,), "scale": ()}
FILE = {"a.weight": (2, 3), "a.bias": (2,), "b.weight": (1, 2), "scale": (), "old.head": (7,)}


def test_each_parameter_is_loaded_new_or_ignored_by_name_and_shape() -> None:
    entries = match_shapes(MODEL, FILE)

    assert entries == (
        Entry("a.weight", LOADED, (2, 3), (2, 3)),
        Entry("a.bias", LOADED, (2,), (2,)),
        Entry("b.weight", NEW, (4, 2), (1, 2)),  # another shape: a head with another class count
        Entry("b.bias", NEW, (4,), None),  # not in the file
        Entry("scale", LOADED, (), ()),
        Entry("old.head", IGNORED, None, (7,)),  # in the file, not in the model
    )


def test_rows_show_each_run_of_loaded_parameters_once_and_the_rest_one_by_one() -> None:
    match = WeightMatch("/x/final.pt", "ab" * 32, "a state dict", match_shapes(MODEL, FILE))

    assert match.rows() == [
        ("a.weight … a.bias", LOADED, "2 tensors", "same shapes"),
        ("b.weight", NEW, "4×2", "1×2"),
        ("b.bias", NEW, "4", "—"),
        ("scale", LOADED, "scalar", "scalar"),
        ("old.head", IGNORED, "—", "7"),
    ]
    assert match.counts() == {LOADED: 3, NEW: 2, IGNORED: 1}
    assert match.title() == (
        "Starting weights final.pt: 3 of 5 parameters loaded, 2 new, 1 ignored"
    )
    assert "new (random, the run's seed): b.weight, b.bias" in match.summary()
    assert "ignored (in the file, not in the model): old.head" in match.summary()


def test_the_record_round_trips_through_json() -> None:
    match = WeightMatch("/x/final.pt", "cd" * 32, "fedscan small-cnn", match_shapes(MODEL, FILE))

    assert WeightMatch.from_json(match.to_json()) == match


def test_a_file_that_fits_nothing_is_one_line_naming_both_sides_and_the_fix() -> None:
    match = WeightMatch("/x/unet.pt", "ef" * 32, "fedscan unet", match_shapes(MODEL, {"u": (9,)}))

    saved_from_another = nothing_matched(match, "small-cnn", saved_from="unet")
    plain = nothing_matched(match, "small-cnn")

    assert "\n" not in saved_from_another and "none of the 5 parameters" in saved_from_another
    assert "the file's: u" in saved_from_another
    assert "set model = 'unet'" in saved_from_another
    assert "saved from a 'small-cnn' model" in plain
