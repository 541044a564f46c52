"""Text → prediction and label → the same representation (evaluation.md §1)."""

from __future__ import annotations

import pytest

from omics.answers import extract_answer, has_wellformed_reasoning, parse_number, parse_numbers
from omics.evaluate.parse import normalize_label, parse_prediction
from omics.evaluate.tasks import TaskSpec


def spec(type_: str, **kw) -> TaskSpec:
    task, family = kw.pop("task", "t-x"), kw.pop("family", "t")
    return TaskSpec(task=task, family=family, type=type_, paper_metric="x", **kw)


REG = spec("regression")
HK_DEV = spec("multi_regression", keys=["hk", "dev"])
SWITCH = spec("multi_regression", keys=["ON", "OFF", "ON_OFF"])
BIN = spec("binary", classes=["negative", "positive"])
SOLUBLE = spec("binary", classes=["insoluble", "soluble"])
NCRNA = spec("multiclass", classes=["5S_rRNA", "miRNA", "pre-miRNA", "tRNA"])
MOD = spec("multilabel", classes=["Am", "Psi", "m6A", "m6Am", "none"])
EC = spec("multilabel", task="FunctionEC-x", family="FunctionEC", classes=["1.1.1.1"])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("<reasoning>r</reasoning> <answer> 72.00% remaining </answer>", ("72.00% remaining", True)),
        ("<ANSWER>yes</ANSWER>", ("yes", True)),
        ("<answer>1</answer> then <answer>2</answer>", ("2", True)),  # the last complete block
        ("<answer>a <answer>b</answer> c</answer>", ("b", True)),  # nested: the innermost
        ("<answer>2</answer> trailing <answer>3", ("2", True)),  # unclosed last block is ignored
        ("plain 72", ("plain 72", False)),
        ("<answer>72", ("<answer>72", False)),
        ("72</answer>", ("72</answer>", False)),
    ],
)
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        ("<reasoning>because</reasoning> <answer>72</answer>", True),
        ("\n<reasoning>a\nb</reasoning>\n<answer>x</answer>\n", True),
        ("<answer>72</answer><reasoning>because</reasoning>", False),  # wrong order
        ("<reasoning> </reasoning><answer>72</answer>", False),  # empty reasoning
        ("<reasoning>r</reasoning><answer>1</answer><answer>2</answer>", False),  # two answers
        ("<reasoning>r</reasoning><answer>1</answer> extra", False),  # text outside the blocks
        ("<reasoning>r</reasoning> 72", False),
    ],
)
def test_has_wellformed_reasoning(text, ok):
    assert has_wellformed_reasoning(text) is ok


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("mRNA remaining percentage of 72.00%.", 72.0),
        ("about 1e-3 units", 0.001),
        ("roughly .5", 0.5),
        ("-3.2 and then 4", -3.2),
        ("ends at 72.", 72.0),
        ("H3K4me3 level is 0.25", 0.25),  # digits glued to letters are not numbers
        ("version 1.2.3", 1.2),
        ("no number here", None),
    ],
)
def test_parse_number_first(text, value):
    assert parse_number(text) == value


def test_parse_numbers_all_in_order():
    assert parse_numbers("hk: 1.5, dev: -0.25; 10-20") == [1.5, -0.25, 10.0, 20.0]


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("-1000", -1000.0),
        ("1000.5", 1000.5),  # a huge number is still a number: only the paper's Mixed Score drops |x| > 1000
        ("about 1500 then 3", 1500.0),  # the FIRST number decides
        ("1e999", None),  # overflows to inf
        ("nothing", None),
        ("72.00%", 72.0),
    ],
)
def test_regression_prediction(text, value):
    assert parse_prediction(text, REG) == value


def test_multi_output_two_and_three_keys():
    assert parse_prediction("hk 1.2, dev -0.3", HK_DEV) == {"hk": 1.2, "dev": -0.3}
    assert list(parse_prediction("0.5 0.25", HK_DEV)) == ["hk", "dev"]
    assert parse_prediction("hk 1.2", HK_DEV) is None  # one number for two keys
    assert parse_prediction("1 2 3", HK_DEV) is None  # three numbers for two keys
    assert parse_prediction("1 2000", HK_DEV) == {"hk": 1.0, "dev": 2000.0}  # huge, still a number
    expected = {"ON": 0.5, "OFF": 0.25, "ON_OFF": 0.125}
    assert parse_prediction("ON 0.5, OFF 0.25, ON_OFF 0.125", SWITCH) == expected


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("The sequence is not associated with H3K4me3.", False),
        ("No evidence of binding.", False),
        ("It does not contain a promoter.", False),
        ("It doesn't bind.", False),
        ("The mark is absent.", False),
        ("Negative.", False),
        ("Positive, no doubt.", False),  # negations are looked for first
        ("Yes, it binds.", True),
        ("The result is positive.", True),
        ("The sequence is associated with the mark.", True),
        ("A core promoter is present.", True),
        ("Maybe.", None),
        ("", None),
    ],
)
def test_binary_wording(text, value):
    assert parse_prediction(text, BIN) is value


def test_binary_task_spellings():
    assert parse_prediction("The protein is insoluble.", SOLUBLE) is False
    assert parse_prediction("The protein is soluble.", SOLUBLE) is True
    assert parse_prediction("The protein is not soluble.", SOLUBLE) is False


@pytest.mark.parametrize("spec_", [BIN, SOLUBLE])  # the general wording, whatever the task's labels
def test_solubility_answer_styles(spec_):
    assert parse_prediction("The protein is soluble.", spec_) is True
    assert parse_prediction("The protein is insoluble.", spec_) is False


@pytest.mark.parametrize(
    "text",
    ["I don't know.", "I do not know whether it binds.", "The answer is unknown.", "This is uncertain.",
     "It cannot be determined from the sequence.", "I'm not sure."],
)  # fmt: skip
def test_hedges_are_invalid_not_negative(text):
    assert parse_prediction(text, BIN) is None


def test_binary_class_words_from_reference_outputs():
    # words the task's reference outputs use for one label only: read after the general wording
    spec_ = spec("binary", classes=["negative", "positive"], negative_words=["lacking"], positive_words=["carries"])
    assert parse_prediction("The sequence carries the mark.", spec_) is True
    assert parse_prediction("The sequence is lacking the mark.", spec_) is False
    assert parse_prediction("The sequence carries no mark.", spec_) is False  # general negation first
    assert parse_prediction("The sequence carries the mark.", BIN) is None

@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("This is a pre-miRNA.", "pre-miRNA"),  # longest match first, not "miRNA"
        ("It belongs to the TRNA family", "tRNA"),  # case-insensitive
        ("a 5S rRNA gene", "5S_rRNA"),  # _ / - / space are interchangeable
        ("several miRNAs", "miRNA"),  # a plural s is allowed
        ("two TRNAS", "tRNA"),
        ("amirna", None),  # whole words only
        ("unknown family", None),
    ],
)
def test_multiclass(text, value):
    assert parse_prediction(text, NCRNA) == value


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("sites: m6Am and Psi", ["Psi", "m6Am"]),  # m6A is not also found inside m6Am
        ("I am sure it is m6A", ["m6A"]),  # an exact-case hit wins over "am"
        ("PSI and M6A", ["Psi", "m6A"]),  # no exact-case hit: case-insensitive
        ("none", ["none"]),
        ("No modifications were detected.", ["none"]),  # negative wording, no class → "none"
        ("There are none.", ["none"]),
        ("nothing found", None),
    ],
)
def test_multilabel(text, value):
    assert parse_prediction(text, MOD) == value


def test_ec_numbers_outside_the_vocabulary_are_ignored():
    # the vocabulary is the EC numbers of the task's labels (here 1.1.1.1), as in the paper's evaluator
    text = "EC 3.4.21.- and 1.1.1.1, also 1.1.1.1."
    assert parse_prediction(text, EC) == ["1.1.1.1"]
    assert parse_prediction("EC 3.4.21.4", EC) is None
    assert parse_prediction("no enzyme", EC) is None


def test_ec_labels_give_their_numbers():
    assert normalize_label("EC 2.7.11.1", EC) == ["2.7.11.1"]
    assert normalize_label("EC 1.1.1.1, EC 3.4.21.-", EC) == ["1.1.1.1", "3.4.21.-"]
    assert normalize_label(["1.1.1.1", "2.7.11.1"], EC) == ["1.1.1.1", "2.7.11.1"]


@pytest.mark.parametrize(
    ("label", "value"),
    [(True, True), (False, False), ("positive", True), ("Negative", False), ("yes", True), ("no", False),
     ("true", True), ("False", False), (1, True), (0, False), ("1", True), ("0", False)],
)  # fmt: skip
def test_normalize_binary(label, value):
    assert normalize_label(label, BIN) is value


def test_normalize_other_types():
    assert normalize_label("insoluble", SOLUBLE) is False
    assert normalize_label("Soluble", SOLUBLE) is True
    with pytest.raises(ValueError, match="t-x"):
        normalize_label("maybe", BIN)
    assert normalize_label("72.0", REG) == 72.0
    with pytest.raises(ValueError):
        normalize_label(True, REG)
    assert list(normalize_label({"dev": 2, "hk": 1}, HK_DEV).items()) == [("hk", 1.0), ("dev", 2.0)]
    with pytest.raises(ValueError):
        normalize_label({"hk": 1}, HK_DEV)
    assert normalize_label(" tRNA ", NCRNA) == "tRNA"
    assert normalize_label("m6A, Am", MOD) == ["Am", "m6A"]
    assert normalize_label(["none"], MOD) == ["none"]
