"""Ontology on the real packaged V4/V7 class lists and hierarchy."""
import json

import pytest

from pipelines import classes, ontology
from pipelines.ontology import (ClassSelectionError, Ontology, UnknownClassError,
                                build_label_set)

HAMBURGER, SANDWICH, SUBMARINE = "/m/0cdn1", "/m/0l515", "/m/06pcq"


@pytest.fixture(scope="module")
def v7():
    return Ontology.load("v7")


@pytest.fixture(scope="module")
def v4():
    return Ontology.load("v4")


def test_real_lists_have_601_classes_and_differ_in_23_names(v4, v7):
    # DESIGN.md says 26; the real files differ in 23 names (the rest are case-only or none).
    assert len(v4.names) == len(v7.names) == 601
    assert set(v4.names) == set(v7.names)
    assert sum(v4.names[m] != v7.names[m] for m in v4.names) == 23
    assert v4.names["/m/0cmf2"] == "Airplane" and v7.names["/m/0cmf2"] == "Fixed-wing aircraft"


def test_root_is_in_no_list_and_every_class_is_under_it(v7):
    assert ontology.ROOT_MID not in v7.names
    assert set(v7.descendants(ontology.ROOT_MID)) == set(v7.names)


def test_sandwich_subclasses_and_parts_are_not_subclasses(v7):
    assert set(v7.descendants(SANDWICH)) == {HAMBURGER, SUBMARINE}
    assert v7.descendants(HAMBURGER) == {}
    bicycle = v7.resolve("Bicycle")
    parts = set(v7.parts[bicycle])
    assert v7.resolve("Bicycle wheel") in parts
    assert not parts & set(v7.descendants(bicycle))


def test_class_under_several_parents_is_listed_once(v7):
    knife = v7.resolve("Knife")
    parents = [m for m, kids in v7.children.items() if knife in kids]
    assert len(parents) >= 2
    under_root = list(v7.descendants(ontology.ROOT_MID))
    assert under_root.count(knife) == 1


@pytest.mark.parametrize("query", ["Hamburger", "hamburger", "  HAMBURGER ", HAMBURGER])
def test_resolve_by_name_any_case_and_by_mid(v7, query):
    assert v7.resolve(query) == HAMBURGER


def test_names_of_the_other_version_resolve(v4, v7):
    assert v7.resolve("Airplane") == "/m/0cmf2"  # V4 spelling in V7
    assert v4.resolve("Fixed-wing aircraft") == "/m/0cmf2"
    assert v4.name("/m/0cmf2") == "Airplane"


def test_unknown_name_fails_with_close_matches(v7):
    with pytest.raises(UnknownClassError) as err:
        v7.resolve("Hamburgers")
    assert "Did you mean: Hamburger" in str(err.value)
    assert v7.suggest("sandwhich")[0] == "Sandwich"


def test_a_huge_unknown_name_is_shown_cut_short(v7):
    with pytest.raises(UnknownClassError) as err:
        v7.resolve("Hamburger" * 11_112)
    message = str(err.value)
    assert len(message) < 300 and "(100,008 characters)" in message


def test_overlapping_requests_go_to_the_most_specific_class(v7):
    ls = build_label_set(v7, ["Hamburger", "Sandwich"], include_subclasses=True,
                         relabel_to_parent=True)
    assert ls.labels == ("Hamburger", "Sandwich")
    assert ls.mid_to_index == {HAMBURGER: 0, SANDWICH: 1, SUBMARINE: 1}
    assert any("Hamburger is also a sub-class of Sandwich" in n for n in ls.notes)


def test_subclasses_are_labels_of_their_own_without_relabel(v7):
    ls = build_label_set(v7, ["Sandwich"], include_subclasses=True)
    assert ls.labels == ("Sandwich", "Hamburger", "Submarine sandwich")
    assert ls.mid_to_index == {SANDWICH: 0, HAMBURGER: 1, SUBMARINE: 2}


def test_exclude_removes_a_class_and_its_descendants(v7):
    ls = build_label_set(v7, ["Food"], include_subclasses=True, exclude=["Sandwich"],
                         relabel_to_parent=True)
    assert {SANDWICH, HAMBURGER, SUBMARINE}.isdisjoint(ls.mid_to_index)
    assert v7.resolve("Pizza") in ls.mid_to_index
    assert set(ls.labels) == {"Food"}


def test_contradictory_or_empty_selection_fails(v7):
    with pytest.raises(ClassSelectionError, match="both requested"):
        build_label_set(v7, ["Hamburger"], exclude=["hamburger"])
    with pytest.raises(ClassSelectionError, match="no classes"):
        build_label_set(v7, [])


def test_duplicate_request_counts_once(v7):
    ls = build_label_set(v7, ["Hamburger", "hamburger"])
    assert ls.labels == ("Hamburger",)
    assert "asked for twice" in ls.notes[0]


def test_classes_command_search_tree_and_json(capsys):
    assert classes.main(["--search", "burger"]) == 0
    assert capsys.readouterr().out.split() == [HAMBURGER, "Hamburger"]
    assert classes.main(["--tree", "Sandwich"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"Sandwich ({SANDWICH})", f"  Hamburger ({HAMBURGER})", f"  Submarine sandwich ({SUBMARINE})"]
    assert classes.main(["--classes", "Sandwich", "--include_subclasses",
                         "--relabel_to_parent", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [l["name"] for l in out["labels"]] == ["Sandwich"]
    assert {m["mid"] for m in out["labels"][0]["mids"]} == {SANDWICH, HAMBURGER, SUBMARINE}


def test_classes_command_bad_name_exits_2_with_suggestion(capsys):
    assert classes.main(["--classes", "Hamburgers"]) == 2
    assert "Did you mean: Hamburger" in capsys.readouterr().err
