"""Goal texts for the VideoCLIP reward: words outside the model's vocabulary are refused with
the list of them and the vocabulary, unless the user opts into reading them as <unk> (issue 36,
item 8). Training tokenises its own captions through `VideoCLIP.tokenize`, which is unchanged."""

import warnings

import pytest
import torch

from wmgym.rewards.judge import SuccessJudge
from wmgym.rewards.videoclip import VideoCLIP, VideoCLIPConfig, VideoCLIPHead, build_vocabulary

TASKS = {"fold_left_sleeve": "fold the left sleeve onto the body", "fold_half": "fold the shirt in half, bottom edge to top edge"}


def tiny_model() -> VideoCLIP:
    vocabulary = build_vocabulary([*TASKS.values(), "the shirt is not folded yet"])
    config = VideoCLIPConfig(image_size=16, num_frames=2, conv_channels=(8, 8), frame_width=8, embed_dim=8, text_width=8,
                             text_heads=2, vocabulary=vocabulary, task_captions=dict(TASKS))
    torch.manual_seed(0)
    return VideoCLIP(config, device="cpu")


def clips(batch: int = 2) -> torch.Tensor:
    return torch.randint(0, 256, (batch, 3, 16, 16, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("goal, unknown", [("crumple the shirt into a ball", "['a', 'ball', 'crumple', 'into']"),
                                           ("zxqv blorp", "['blorp', 'zxqv']")])
def test_goal_text_with_unknown_words_is_refused_listing_them_and_the_vocabulary(goal, unknown):
    head = VideoCLIPHead(tiny_model())
    with pytest.raises(ValueError) as error:
        head.score(clips(), goal)
    message = str(error.value)
    assert "\n" not in message and repr(goal) in message
    assert f"never saw: {unknown}" in message
    assert "vocabulary is ['body', 'bottom', 'edge', 'fold'" in message and "allow_unknown_words=True" in message
    with pytest.raises(ValueError, match="never saw"):  # and again: a refused text is not cached
        head.score(clips(), goal)


def test_check_text_refuses_before_any_model_call_and_accepts_known_words():
    head = VideoCLIPHead(tiny_model())
    head.check_text(TASKS["fold_half"])
    head.check_text(["Fold the LEFT sleeve!", "the shirt is not folded yet"])  # case and punctuation do not matter
    with pytest.raises(ValueError, match=r"goal text 'fold the zebra' has words the VideoCLIP model never saw: \['zebra'\]"):
        head.check_text(["fold the shirt", "fold the zebra"])
    with pytest.raises(ValueError, match=r"no words at all: \['\?\?\?'\]"):
        head.check_text("???")
    assert head._text_cache == {}  # checking encodes nothing
    assert head.model.unknown_words(["Fold the zebra, the ZEBRA and a yak"]) == ["a", "and", "yak", "zebra"]
    assert SuccessJudge(head).probability(clips(), "fold_half").shape == (2,)  # the judge asks with the config's captions
    ids, _ = head.model.tokenize(["fold the zebra"])  # training tokenises its own captions: unknown words stay <unk>
    assert ids[0, -1].item() == head.model.word_ids["<unk>"]


def test_allow_unknown_words_reads_them_as_unk_and_warns_once_per_word():
    model = tiny_model()
    head = VideoCLIPHead(model, allow_unknown_words=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = head.score(clips(), "zxqv blorp")
        head.score(clips(), "zxqv blorp")  # cached: no second warning
        head.score(clips(), "fold the zxqv")  # a new text, but no new unknown word
    assert len(caught) == 1 and "['blorp', 'zxqv']" in str(caught[0].message)
    with torch.no_grad():
        expected = (model.encode_video(clips()) * model.encode_text(["zxqv blorp"] * 2)).sum(-1)
    torch.testing.assert_close(first, expected)  # what the model's own tokenisation (<unk>) gives
    with pytest.warns(UserWarning, match=r"\['crumple'\]"):
        head.check_text("crumple the shirt")


def test_from_pretrained_passes_allow_unknown_words(tmp_path):
    path = tiny_model().save_pretrained(tmp_path / "clip")
    with pytest.raises(ValueError, match="never saw"):
        VideoCLIPHead.from_pretrained(path, device="cpu").score(clips(), "zxqv")
    with pytest.warns(UserWarning, match="zxqv"):
        assert VideoCLIPHead.from_pretrained(path, device="cpu", allow_unknown_words=True).score(clips(), "zxqv").shape == (2,)

