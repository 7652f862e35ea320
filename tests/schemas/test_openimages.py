"""Header detection on every layout, with the real headers from tests/data."""
import pytest

from pipelines import scan
from schemas import openimages
from schemas.openimages import BOXES, CLASS_DESCRIPTIONS, IMAGES, TableFormatError, detect_variant
from tests.conftest import data_path


@pytest.mark.parametrize("name, kind, variant", [
    ("official_readmeV3__validation-test-annotations-bbox.example.csv", BOXES, "boxes_13"),
    ("code_comment__validation-annotations-bbox.row1.csv", BOXES, "boxes_13"),
    ("v4_bodyparts/test-annotations-bbox.csv", BOXES, "boxes_13"),
    ("gaia__oidv6-train-annotations-bbox.head3.csv", BOXES, "boxes_21"),
    ("gaia__train-images-boxable-with-rotation.head2.csv", IMAGES, "images_12"),
    ("unidentified_note__validation-images-with-rotation.row1.csv", IMAGES, "images_12"),
])
def test_real_headers_are_detected(name, kind, variant):
    assert scan.open_table(data_path(name), kind).variant == variant


def test_image_table_without_rotation_is_the_v4_layout():
    header = ",".join(openimages.variant_by_name("images_12").columns[:-1])
    assert detect_variant(IMAGES, header).name == "images_11"


@pytest.mark.parametrize("first_line, variant", [
    ("/m/011k07,Tortoise", "class_descriptions_noheader"),
    ("LabelName,DisplayName\r\n", "class_descriptions_header"),
    ("\ufeffLabelName,DisplayName", "class_descriptions_header"),
    ("id,name", "class_descriptions_header"),
    ('/m/02wvth,"Fiat 500 ""topolino"""', "class_descriptions_noheader"),
])
def test_class_list_with_and_without_header(first_line, variant):
    assert detect_variant(CLASS_DESCRIPTIONS, first_line).name == variant


def test_unknown_header_names_the_file_and_the_columns_found():
    path = data_path("official_readmeV3__train-annotations-human-bbox_8col.example.csv")
    with pytest.raises(TableFormatError) as err:
        scan.open_table(path, BOXES)
    message = str(err.value)
    assert path in message
    assert "8 columns 'ImageID,Source,LabelName,Confidence,XMin,XMax,YMin,YMax'" in message
    assert "boxes_13" in message and "boxes_21" in message


def test_a_box_table_given_as_image_table_fails_clearly():
    with pytest.raises(TableFormatError, match="known Open Images images table"):
        scan.open_table(data_path("v4_bodyparts/test-annotations-bbox.csv"), IMAGES)


def test_every_variant_has_types_for_every_column():
    for v in openimages.VARIANTS:
        assert len(v.columns) == len(v.types) == len(set(v.columns))
    assert len(openimages.variant_by_name("boxes_13").columns) == 13
    assert len(openimages.variant_by_name("boxes_21").columns) == 21
    assert len(openimages.variant_by_name("images_12").columns) == 12
