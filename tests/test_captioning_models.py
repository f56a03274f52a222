"""Caption networks, their decoding, the training module and the COCO caption metrics (docs/models.md, A4)."""

from __future__ import annotations

import logging
import math

import pytest
import torch
import torchvision

from stride.architectures import build
from stride.architectures.captioning import CaptionExport, beam_search, greedy_decode
from stride.config.schema import OptimConfig, ScheduleConfig
from stride.errors import StrideError
from stride.lightning_modules.captioning import CaptioningModule, caption_loss
from stride.metrics import caption_scores as scores_module
from stride.metrics.caption_scores import caption_scores, java_available, ptb_like_tokens, ptb_tokens

EOS, UKN = 0, 1
VOCABULARY = ["<EOS>", "<UKN>", "a", "dog", "cat", "on", "the", "grass", "red", "ball", "sits", "runs"]
V = len(VOCABULARY)
TINY = {"caption_tcn": {"embedding_size": 16, "channels": 16, "num_blocks": 3, "dropout": 0.0},  # R = 7
        "caption_gru": {"embedding_size": 16, "hidden_size": 24, "num_layers": 2}}  # 24: hidden != 512 projects
DECODERS = sorted(TINY)
CONDITIONING = ["first_step", "every_step"]
needs_java = pytest.mark.skipif(not java_available(), reason="java is not on the PATH (PTBTokenizer, METEOR)")


def tiny(name: str, conditioning: str = "first_step", **overrides) -> torch.nn.Module:
    torch.manual_seed(0)
    return build(name, input_shape=(3, 32, 32), num_classes=V, image_conditioning=conditioning,
                 **{**TINY[name], **overrides}).eval()


def images(n: int = 2) -> torch.Tensor:
    return torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("conditioning", CONDITIONING)
@pytest.mark.parametrize("name", DECODERS)
def test_shapes_padding_and_eos_padded_decoding(name: str, conditioning: str) -> None:
    network = tiny(name, conditioning)
    tokens = torch.tensor([[2, 3, 0, -100, -100], [4, 5, 6, 7, 0]])
    logits = network(images(), tokens)
    assert logits.shape == (2, 5, V)
    # -100 padding is read as EOS: the same logits as padding with EOS itself
    assert torch.allclose(logits, network(images(), tokens.clamp(min=0)))
    for beam_size in (1, 3):
        ids = network.generate(images(), max_words=6, beam_size=beam_size)
        assert ids.shape == (2, 7) and ids.dtype == torch.int64
        assert (ids[:, -1] == EOS).all() and not (ids == UKN).any()
        for row in ids.tolist():
            end = row.index(EOS)
            assert all(i == EOS for i in row[end:])
    export = CaptionExport(network, max_words=4, beam_size=2)
    assert torch.equal(export(images()), network.generate(images(), max_words=4, beam_size=2))


@pytest.mark.parametrize("name", DECODERS)
def test_the_exported_decoder_traces_with_a_dynamic_batch_and_keeps_the_trained_network(name: str) -> None:
    network = tiny(name)
    export = CaptionExport(network, max_words=5)
    with torch.no_grad():
        program = torch.export.export(export, (images(),), dynamic_shapes=({0: torch.export.Dim("batch", min=1)},))
        for n in (1, 3):
            assert torch.equal(program.module()(images(n)), network.generate(images(n), max_words=5))
    # folding the weight norms into the exported copy leaves the network itself parametrised and trainable
    parametrised = [m for m in network.modules() if torch.nn.utils.parametrize.is_parametrized(m)]
    assert bool(parametrised) == (name == "caption_tcn")
    network.train()
    network(images(), torch.tensor([[2, 3, 0], [4, 0, -100]])).sum().backward()


@pytest.mark.parametrize("name", DECODERS)
def test_decoders_are_causal(name: str) -> None:
    """Step s reads the image and tokens < s: changing token t moves logits from step t + 1 on only."""
    network = tiny(name, "every_step")
    tokens = torch.randint(2, V, (2, 12), generator=torch.Generator().manual_seed(2))
    changed = tokens.clone()
    changed[:, 5] = torch.where(tokens[:, 5] == 2, 3, 2)
    before, after = network(images(), tokens), network(images(), changed)
    assert torch.allclose(before[:, :6], after[:, :6], atol=1e-6)
    assert not torch.allclose(before[:, 6], after[:, 6])


@pytest.mark.parametrize("conditioning", CONDITIONING)
@pytest.mark.parametrize("name", DECODERS)
def test_step_by_step_decoding_equals_teacher_forcing(name: str, conditioning: str) -> None:
    """start/advance (the TCN's prefix cut to its receptive field of 7) give the teacher-forced logits."""
    network = tiny(name, conditioning)
    tokens = torch.randint(2, V, (2, 12), generator=torch.Generator().manual_seed(3))
    forced = network(images(), tokens)
    with torch.no_grad():
        logits, state = network.start(network.image_vectors(images()))
        steps = [logits]
        for t in range(tokens.shape[1] - 1):
            logits, state = network.advance(state, tokens[:, t])
            steps.append(logits)
    assert torch.allclose(torch.stack(steps, dim=1), forced, atol=1e-5)


def test_greedy_takes_the_second_word_when_unknown_is_first() -> None:
    network = tiny("caption_gru")
    with torch.no_grad():
        network.head.weight.zero_()
        network.head.bias.zero_()
        network.head.bias[[UKN, 7, EOS]] = torch.tensor([10.0, 5.0, 1.0])  # <UKN>, then "grass", then EOS
    ids = network.generate(images(), max_words=4)
    assert ids.tolist() == [[7, 7, 7, 7, EOS]] * 2


class RiggedDecoder:
    """Next-word probabilities that depend on the last word only; the state is that word."""

    def __init__(self, table: dict[int | None, dict[int, float]]):
        self.table = table

    def _logits(self, previous: list[int | None]) -> torch.Tensor:
        logits = torch.full((len(previous), 4), -30.0)
        for row, word in enumerate(previous):
            for next_word, p in self.table.get(word, {EOS: 1.0}).items():
                logits[row, next_word] = math.log(p)
        return logits

    def start(self, features: torch.Tensor):
        return self._logits([None] * len(features)), (torch.zeros(len(features), dtype=torch.long),)

    def advance(self, state, tokens: torch.Tensor):
        return self._logits(tokens.tolist()), (tokens,)


def test_beam_search_finds_a_more_probable_caption_than_greedy() -> None:
    # "a" is likelier first (0.6), but then ends with 0.34 only; "b" (0.4) ends with 0.95
    decoder = RiggedDecoder({None: {2: 0.6, 3: 0.4}, 2: {EOS: 0.34, 2: 0.33, 3: 0.33}, 3: {EOS: 0.95, 2: 0.05}})
    features = torch.zeros(1, 8)
    assert greedy_decode(decoder, features, max_words=3).tolist() == [[2, EOS, EOS, EOS]]  # p = 0.204
    assert beam_search(decoder, features, max_words=3, beam_size=2).tolist() == [[3, EOS, EOS, EOS]]  # p = 0.38
    assert beam_search(decoder, features, max_words=3, beam_size=1).tolist() == [[2, EOS, EOS, EOS]]


def test_beam_never_emits_unknown() -> None:
    decoder = RiggedDecoder({None: {UKN: 0.9, 2: 0.1}, 2: {EOS: 1.0}})
    assert beam_search(decoder, torch.zeros(1, 8), max_words=2, beam_size=3).tolist() == [[2, EOS, EOS]]


@pytest.mark.parametrize("name", DECODERS)
def test_beam_size_one_is_greedy(name: str) -> None:
    network = tiny(name, dropout=0.0)
    # spread-out image vectors (an untrained ResNet maps noise images to nearly one vector): varied captions
    features = 3 * torch.randn(6, 512, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        greedy = greedy_decode(network, features, 10)
        assert torch.equal(beam_search(network, features, 10, beam_size=1), greedy)
    assert len({tuple(row) for row in greedy.tolist()}) >= 4


CAPTIONS = torch.tensor([[2, 3, 10, 5, 6, 7, EOS], [6, 8, 9, 11, 5, 7, EOS]])  # 6 words + EOS each


@pytest.mark.parametrize("name", DECODERS)
def test_overfits_two_captions_and_greedy_reproduces_them(name: str) -> None:
    network = tiny(name, freeze_encoder=True).train()
    assert not network.encoder.training  # a frozen encoder keeps its batch-norm statistics
    trainable = [p for p in network.parameters() if p.requires_grad]
    assert len(trainable) < len(list(network.parameters()))
    optimizer = torch.optim.Adam(trainable, lr=0.01)
    for _ in range(100):
        loss = caption_loss(network(images(), CAPTIONS), CAPTIONS)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.05
    network.eval()
    assert torch.equal(network.generate(images(), max_words=8)[:, :7], CAPTIONS)
    assert torch.equal(network.generate(images(), max_words=8, beam_size=3)[:, :7], CAPTIONS)


def test_loss_is_the_mean_over_all_words_of_the_batch() -> None:
    logits = torch.randn(2, 3, V)
    tokens = torch.tensor([[2, EOS, -100], [3, 4, EOS]])
    words = [(0, 0), (0, 1), (1, 0), (1, 1), (1, 2)]
    expected = sum(-torch.log_softmax(logits[i, t], -1)[tokens[i, t]] for i, t in words) / len(words)
    assert caption_loss(logits, tokens).item() == pytest.approx(expected.item(), rel=1e-6)


# Parameters at the seed's sizes for a 10,000-word vocabulary. ResNet-18 trunk 11,176,512, embedding
# 5,120,000. TCN: block 1 (512 -> 256: convs and 1x1 skip, weight-normed) 525,824, 17 blocks x 263,168,
# head 2,570,000. GRU: 3 x 1,575,936, head 5,130,000. every_step widens the decoder's first input to 1024.
PARAMETERS = {("caption_tcn", "first_step"): 23_866_192, ("caption_tcn", "every_step"): 24_259_408,
              ("caption_gru", "first_step"): 26_154_320, ("caption_gru", "every_step"): 26_940_752}


@pytest.mark.parametrize("name,conditioning", sorted(PARAMETERS))
def test_parameter_counts_at_the_seed_sizes(name: str, conditioning: str) -> None:
    with torch.device("meta"):
        network = build(name, input_shape=(3, 224, 224), num_classes=10_000, image_conditioning=conditioning)
    count = sum(p.numel() for p in network.parameters())
    print(f"{name} {conditioning}: {count:,} parameters")
    assert count == PARAMETERS[name, conditioning]
    if name == "caption_tcn":
        assert network.tcn.receptive_field == 37


def test_encoder_weights_load_from_a_local_state_dict(tmp_path) -> None:
    resnet = torchvision.models.resnet18(weights=None)
    torch.save(resnet.state_dict(), tmp_path / "resnet18.pt")
    network = tiny("caption_gru", encoder_weights=str(tmp_path / "resnet18.pt"))
    assert torch.equal(network.encoder.resnet.conv1.weight, resnet.conv1.weight)
    with pytest.raises(StrideError, match="missing.pt is not a file"):
        tiny("caption_gru", encoder_weights=str(tmp_path / "missing.pt"))
    torch.save({"conv1.weight": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(StrideError, match="other.pt is not a torchvision resnet18"):
        tiny("caption_gru", encoder_weights=str(tmp_path / "other.pt"))
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(StrideError, match="junk.pt is not a state_dict"):
        tiny("caption_gru", encoder_weights=str(tmp_path / "junk.pt"))


def loader(*batches):
    """Prebuilt batches as one loader (a plain list would be read as one loader per batch)."""
    return torch.utils.data.DataLoader(list(batches), batch_size=None, collate_fn=lambda b: b)


def batch(n_images: int, offset: int = 0):
    tokens = CAPTIONS.repeat(n_images, 1)[offset:offset + n_images]
    references = [["A dog sits on the grass.", "a dog on grass"], ["The red ball runs on the grass"]]
    return (torch.rand(n_images, 3, 32, 32), tokens, (tokens != -100).sum(1),
            [references[(offset + i) % 2] for i in range(n_images)])


def test_module_trains_and_scores_its_splits() -> None:
    import pytorch_lightning as pl

    module = CaptioningModule(tiny("caption_tcn").train(), OptimConfig(name="adamw", lr=0.01), ScheduleConfig(),
                              None, VOCABULARY, max_words=8, kept_samples=3)
    trainer = pl.Trainer(max_steps=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
    trainer.fit(module, train_dataloaders=loader(batch(2), batch(2)),
                val_dataloaders=loader(batch(2), batch(3, 1)))
    assert {"train_loss", "val_loss", "val_bleu4", "val_rouge_l", "val_cider"} <= set(trainer.callback_metrics)
    trainer.test(module, dataloaders=loader(batch(3), batch(2)))
    metrics = trainer.callback_metrics
    assert metrics["test_samples"] == 5
    assert {"test_loss", "test_bleu1", "test_bleu4", "test_rouge_l", "test_cider"} <= set(metrics)
    assert len(module.last_test_captions) == 5 and len(module.last_samples) == 3
    assert len(module.last_sample_images) == 3 and module.last_sample_images[0].shape == (32, 32, 3)
    references, caption = module.last_samples[0]
    assert references == batch(3)[3][0] and isinstance(caption, str) and "<UKN>" not in caption


# --- metrics ---------------------------------------------------------------------------------------

def test_identical_captions_score_one() -> None:
    captions = {1: "a dog sits on the grass", 2: "a red ball on a table"}
    result = caption_scores(captions, {k: [v] for k, v in captions.items()}, metrics=("BLEU", "ROUGE_L"),
                            tokenizer="python")
    for metric in ("BLEU-1", "BLEU-4", "ROUGE-L"):
        assert result.values[metric] == pytest.approx(1.0, abs=1e-6)


def test_bleu1_by_hand() -> None:
    # clipped unigram matches: cat, on, mat = 3 of 5; brevity penalty exp(1 - 6/5)
    result = caption_scores({0: "a cat on a mat"}, {0: ["the cat is on the mat"]}, metrics=("BLEU",),
                            tokenizer="python")
    assert result.values["BLEU-1"] == pytest.approx(0.6 * math.exp(1 - 6 / 5), rel=1e-5)


def test_cider_d_of_perfect_and_worse_captions() -> None:
    """Each n-gram occurs in one image's references only, so every idf is log(2) > 0 and a caption equal
    to its only reference has cosine 1 at n = 1..4 and no length penalty: CIDEr-D = 10 x mean = 10.
    (An n-gram in every image's references would get idf 0 and count for nothing.)"""
    references = {0: ["two dogs play with a ball"], 1: ["the man rides his red bike"]}
    perfect = caption_scores({0: references[0][0], 1: references[1][0]}, references, metrics=("CIDEr",),
                             tokenizer="python").values["CIDEr-D"]
    assert perfect == pytest.approx(10.0)
    partial = caption_scores({0: "two dogs play", 1: "the man rides"}, references, metrics=("CIDEr",),
                             tokenizer="python").values["CIDEr-D"]
    wrong = caption_scores({0: "the man rides", 1: "two dogs play"}, references, metrics=("CIDEr",),
                           tokenizer="python").values["CIDEr-D"]
    assert perfect > partial > wrong == 0.0


def test_without_java_meteor_is_skipped_and_said_once(monkeypatch, caplog) -> None:
    monkeypatch.setattr(scores_module, "java_available", lambda: False)
    monkeypatch.setattr(scores_module, "_warned", set())
    with caplog.at_level(logging.WARNING):
        for _ in range(2):
            result = caption_scores({0: "a dog"}, {0: ["a dog."]})
    assert "METEOR" not in result.values and "java" in result.skipped["METEOR"]
    assert result.values["BLEU-1"] == pytest.approx(1.0, abs=1e-6)  # "a dog." is tokenised to "a dog"
    assert sum("METEOR skipped" in r.message for r in caplog.records) == 1
    with pytest.raises(StrideError, match="needs `java`"):
        caption_scores({0: "a dog"}, {0: ["a dog"]}, tokenizer="ptb")


def test_bad_inputs_name_the_problem() -> None:
    with pytest.raises(StrideError, match="unknown SPICE"):
        caption_scores({0: "a"}, {0: ["a"]}, metrics=("SPICE",))
    with pytest.raises(StrideError, match="no references"):
        caption_scores({0: "a", 1: "b"}, {0: ["a"]})


def test_python_tokens_are_the_ptb_tokens_of_everyday_captions() -> None:
    captions = ["A man's dog isn't here.", "Two people, in a U.S. city: at 3 p.m.!", "A t-shirt (blue) on a bed.",
                "Kids' toys; it's 'fine' \"ok\" -- 1,000 cats...", "They're eating pizza, don't they?", ""]
    expected = ["a man 's dog is n't here", "two people in a u.s. city at 3 p.m.",
                "a t-shirt -lrb- blue -rrb- on a bed", "kids toys it 's fine ok 1,000 cats",
                "they 're eating pizza do n't they", ""]
    assert [ptb_like_tokens(c) for c in captions] == expected
    if java_available():
        assert ptb_tokens(captions) == expected


@pytest.mark.slow  # METEOR's Java process loads its paraphrase table: about 10 s
@needs_java
def test_meteor_with_java() -> None:
    references = {0: ["a man riding a horse on the beach", "a person on a horse"], 1: ["two dogs play in grass"]}
    result = caption_scores({0: "a man riding a horse on the beach", 1: "a cat sleeps"}, references)
    assert set(result.values) == {"BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr-D"}
    assert not result.skipped and 0.3 < result.values["METEOR"] < 0.9  # one caption perfect, one all wrong


def test_a_checkpoint_rebuilds_without_the_encoder_file_it_was_initialised_from(tmp_path) -> None:
    """A promoted search trial is exported from its weights, maybe on another machine: the pretrained
    encoder file only initialised the network, and the checkpoint holds every weight."""
    from stride.config import load_config
    from stride.tasks import DataFacts, get_task
    from stride.training.checkpoints import load_module

    torch.save(torchvision.models.resnet18(weights=None).state_dict(), tmp_path / "resnet18.pt")
    config = load_config("caption-gru-shapes",
                         [f"data.path={tmp_path}", f"model.encoder_weights={tmp_path}/resnet18.pt"])
    facts = DataFacts("captioning", (3, 64, 64), V, tuple(VOCABULARY))
    module = get_task("captioning").module(config, facts)
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": {"stride": module.hparams["stride"]}},
               tmp_path / "module.pt")
    (tmp_path / "resnet18.pt").unlink()
    _, rebuilt = load_module(tmp_path / "module.pt")
    assert all(torch.equal(a, b) for a, b in zip(module.state_dict().values(), rebuilt.state_dict().values()))


def test_the_image_vector_may_start_the_first_gru_layer_only() -> None:
    """The study's "the first hidden layer in the GRU": layer 0 starts from the image, the others from zero;
    step-by-step decoding still equals teacher forcing, and the default (every layer) differs from it."""
    network = tiny("caption_gru", initial_state="first_layer")
    features = network.image_vectors(images())
    hidden = network._initial_hidden(features)
    assert hidden.shape == (2, 2, 24) and hidden[0].abs().sum() > 0 and torch.all(hidden[1] == 0)
    tokens = torch.randint(2, V, (2, 8), generator=torch.Generator().manual_seed(3))
    forced = network(images(), tokens)
    with torch.no_grad():
        logits, state = network.start(features)
        steps = [logits]
        for t in range(tokens.shape[1] - 1):
            logits, state = network.advance(state, tokens[:, t])
            steps.append(logits)
    assert torch.allclose(torch.stack(steps, dim=1), forced, atol=1e-5)
    assert not torch.allclose(tiny("caption_gru")(images(), tokens), forced)  # same weights, other start
    with torch.no_grad():  # and it exports with a dynamic batch
        program = torch.export.export(CaptionExport(network, max_words=5), (images(),),
                                      dynamic_shapes=({0: torch.export.Dim("batch", min=1)},))
        for n in (1, 3):
            assert torch.equal(program.module()(images(n)), network.generate(images(n), max_words=5))
