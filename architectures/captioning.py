"""Image captioning networks (docs/models.md, A4; section 8 of the TCN study): a ResNet-18 encoder and a TCN or GRU
decoder.

There is no start token: the image vector (ResNet-18 up to global average pooling, 512-d,
projected to the embedding size when they differ) is the input at step 0, and the input at
step t > 0 is the embedding of word t-1. The output at step t predicts word t, so a caption
of n words trains n + 1 outputs (the last one predicts EOS). The study's suggested fix,
never tested there, is `image_conditioning="every_step"`: the projected image vector is
concatenated to every step's input (doubling the decoder's input width), so the TCN sees
the image at every step, not only inside its receptive field of step 0.

Decoding is batched on the device: greedy (the study's rule: when <UKN> is the most likely
word, the second is taken, i.e. <UKN> is never emitted) or beam search ranking hypotheses
by their plain sum of log-probabilities (no length normalisation), <UKN> suppressed alike.
Both return (N, max_words + 1) ids padded with EOS. Eager decoding stops once every caption
has ended (one device sync per word); the exported model always runs all `max_words` steps,
since torch.export cannot stop on a value it computes, and gives the same ids.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Literal, TypeVar

import torch
from pydantic import PositiveInt
from torch import Tensor, nn

from stride.architectures.hyperparameters import DropProbability
from stride.architectures.registry import register
from stride.architectures.tcn import TCN, DilationSchedule, dilations
from stride.errors import StrideError

IMAGE_FEATURES = 512  # ResNet-18's global average pool
EOS_ID = 0  # what -100 padding becomes before embedding (the vocabulary's eos_id)
ImageConditioning = Literal["first_step", "every_step"]
InitialState = Literal["every_layer", "first_layer"]  # which GRU layers start from the image vector
DecoderState = tuple[Tensor, ...]  # every tensor batch-first, so beams can reorder rows alike
_Network = TypeVar("_Network", bound=nn.Module)


def decoder_input_size(embedding_size: int, image_conditioning: ImageConditioning) -> int:
    """Width of each step's input: the embedding, with the projected image vector appended for every_step."""
    return embedding_size * (2 if image_conditioning == "every_step" else 1)


class ImageEncoder(nn.Module):
    """torchvision's ResNet-18 up to and including global average pooling: images -> (N, 512).

    `weights`: a local torchvision resnet18 state_dict (its `fc.*` entries are ignored);
    None keeps the random initialisation. A frozen encoder gets no gradients and keeps its
    batch-norm statistics (it stays in eval mode when the network trains).
    """

    def __init__(self, weights: str | None = None, freeze: bool = False):
        super().__init__()
        import torchvision.models as tv

        self.resnet = tv.resnet18(weights=None)
        self.resnet.fc = nn.Identity()
        if weights is not None:
            self.resnet.load_state_dict(_resnet18_state(weights))
        self.frozen = freeze
        if freeze:
            self.requires_grad_(False)
            self.eval()

    def train(self, mode: bool = True) -> ImageEncoder:
        return super().train(mode and not self.frozen)

    def forward(self, images: Tensor) -> Tensor:
        return self.resnet(images)


def _resnet18_state(path: str) -> dict[str, Tensor]:
    file = Path(path)
    if not file.is_file():
        raise StrideError(f"model.encoder_weights: {file} is not a file")
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle.UnpicklingError (not weights only), RuntimeError (corrupt), EOFError ...
        raise StrideError(f"model.encoder_weights: {file} is not a state_dict that torch.load reads with "
                          f"weights_only=True ({type(err).__name__}: {err})") from None
    if not isinstance(state, Mapping) or not all(isinstance(v, Tensor) for v in state.values()):
        raise StrideError(f"model.encoder_weights: {file} holds a {type(state).__name__}, expected the state_dict "
                          "(name -> tensor) of a torchvision resnet18")
    trunk = {k: v for k, v in state.items() if not k.startswith("fc.")}
    import torchvision.models as tv

    expected = {k: v.shape for k, v in tv.resnet18(weights=None).state_dict().items() if not k.startswith("fc.")}
    missing = sorted(set(expected) - set(trunk))
    unexpected = sorted(set(trunk) - set(expected))
    wrong = sorted(k for k in set(expected) & set(trunk) if trunk[k].shape != expected[k])
    if missing or unexpected or wrong:
        raise StrideError(f"model.encoder_weights: {file} is not a torchvision resnet18 state_dict (missing: "
                          f"{missing[:3]}, unexpected: {unexpected[:3]}, wrong shapes: {wrong[:3]})")
    return trunk


class CaptionNetwork(nn.Module):
    """Encoder, word embedding and the step inputs shared by both decoders; a decoder adds
    `teacher_forced`, `start` and `advance`.

    `forward(images in [0, 1], tokens (N, T)) -> logits (N, T, V)` with teacher forcing;
    `normalize` (Identity until the task sets the data's mean and std) runs first.
    """

    def __init__(self, vocabulary_size: int, embedding_size: int, image_conditioning: ImageConditioning,
                 encoder_weights: str | None, freeze_encoder: bool):
        super().__init__()
        self.vocabulary_size = vocabulary_size
        self.image_conditioning = image_conditioning
        self.normalize: nn.Module = nn.Identity()
        self.encoder = ImageEncoder(encoder_weights, freeze_encoder)
        self.image_projection = (nn.Identity() if embedding_size == IMAGE_FEATURES
                                 else nn.Linear(IMAGE_FEATURES, embedding_size))
        self.embedding = nn.Embedding(vocabulary_size, embedding_size)
        self.input_size = decoder_input_size(embedding_size, image_conditioning)

    def image_vectors(self, images: Tensor) -> Tensor:
        """(N, 512) ResNet-18 features of images in [0, 1]."""
        return self.encoder(self.normalize(images))

    def _conditioned(self, steps: Tensor, image: Tensor) -> Tensor:
        """(N, t, E) step inputs, with the projected image vector (N, E) appended to each for every_step."""
        if self.image_conditioning == "first_step":
            return steps
        return torch.cat([steps, image[:, None].expand(-1, steps.shape[1], -1)], dim=-1)

    def first_input(self, image: Tensor) -> Tensor:
        """(N, 1, D): the projected image vector as the first "word"."""
        return self._conditioned(image[:, None], image)

    def word_inputs(self, image: Tensor, words: Tensor) -> Tensor:
        """(N, t, D) inputs for words (N, t); negative ids (padding) are read as EOS."""
        return self._conditioned(self.embedding(torch.where(words < 0, EOS_ID, words)), image)

    def step_inputs(self, features: Tensor, tokens: Tensor) -> Tensor:
        """(N, T, D): step 0 the image, step t the embedding of tokens[:, t-1]."""
        image = self.image_projection(features)
        return torch.cat([self.first_input(image), self.word_inputs(image, tokens[:, :-1])], dim=1)

    def forward(self, images: Tensor, tokens: Tensor) -> Tensor:
        features = self.image_vectors(images)
        return self.teacher_forced(features, self.step_inputs(features, tokens))

    def teacher_forced(self, features: Tensor, inputs: Tensor) -> Tensor:
        raise NotImplementedError

    def start(self, features: Tensor) -> tuple[Tensor, DecoderState]:
        """Logits (N, V) of the first word, and the state to continue from."""
        raise NotImplementedError

    def advance(self, state: DecoderState, tokens: Tensor) -> tuple[Tensor, DecoderState]:
        """Feed the words just chosen (N,): logits (N, V) of the next ones, and the new state."""
        raise NotImplementedError

    @torch.no_grad()
    def generate(self, images: Tensor, *, max_words: int = 50, beam_size: int = 1, eos_id: int = EOS_ID,
                 unknown_id: int | None = 1, early_stop: bool = True) -> Tensor:
        """int64 (N, max_words + 1) word ids, EOS after the caption; greedy for beam_size 1.

        `early_stop=False` runs every step (what torch.export traces); the ids are the same."""
        if max_words < 1 or beam_size < 1:
            raise StrideError(f"captioning: max_words and beam_size must be >= 1, got {max_words}, {beam_size}")
        features = self.image_vectors(images)
        if beam_size == 1:
            return greedy_decode(self, features, max_words, eos_id, unknown_id, early_stop)
        return beam_search(self, features, max_words, beam_size, eos_id, unknown_id, early_stop)


class TCNCaptioner(CaptionNetwork):
    """The study's TCN decoder: stride's TCN (causal, left-padded residual blocks), a linear layer per step.

    Decoding feeds the whole prefix again at every step (the study's "concatenated to the
    activation tensor"), cut to the receptive field: the last output does not see further back.
    """

    def __init__(self, tcn: TCN, **shared):
        super().__init__(**shared)
        self.tcn = tcn

    def _logits(self, inputs: Tensor) -> Tensor:
        return self.tcn.head(self.tcn.features(inputs.transpose(1, 2)).transpose(1, 2))

    def teacher_forced(self, features: Tensor, inputs: Tensor) -> Tensor:
        return self._logits(inputs)

    def _last_logits(self, prefix: Tensor) -> tuple[Tensor, Tensor]:
        prefix = prefix[:, -self.tcn.receptive_field:]
        return self.tcn.head(self.tcn.features(prefix.transpose(1, 2))[:, :, -1]), prefix

    def start(self, features: Tensor) -> tuple[Tensor, DecoderState]:
        image = self.image_projection(features)
        logits, prefix = self._last_logits(self.first_input(image))
        return logits, (image, prefix)

    def advance(self, state: DecoderState, tokens: Tensor) -> tuple[Tensor, DecoderState]:
        image, prefix = state
        logits, prefix = self._last_logits(torch.cat([prefix, self.word_inputs(image, tokens[:, None])], dim=1))
        return logits, (image, prefix)


class GRUCaptioner(CaptionNetwork):
    """The study's GRU decoder: the image vector (projected to hidden_size when they differ) is the initial
    hidden state of every layer, or of the first only (`first_layer`, the study's "the first hidden layer in the
    GRU"; the others start at zero), and also the first input; a linear layer reads the top layer."""

    def __init__(self, hidden_size: int, num_layers: int, dropout: float, initial_state: InitialState = "every_layer",
                 **shared):
        super().__init__(**shared)
        self.num_layers, self.initial_state = num_layers, initial_state
        self.image_to_hidden = nn.Identity() if hidden_size == IMAGE_FEATURES else nn.Linear(IMAGE_FEATURES,
                                                                                             hidden_size)
        # PyTorch applies dropout between layers only, and warns when there is none to apply.
        self.gru = nn.GRU(self.input_size, hidden_size, num_layers, batch_first=True,
                          dropout=dropout if num_layers > 1 else 0.0)
        self.head = nn.Linear(hidden_size, self.vocabulary_size)

    def _initial_hidden(self, features: Tensor) -> Tensor:
        image = self.image_to_hidden(features)[None]
        if self.initial_state == "first_layer":
            return torch.cat([image, image.new_zeros(self.num_layers - 1, *image.shape[1:])])
        return image.expand(self.num_layers, -1, -1).contiguous()

    def teacher_forced(self, features: Tensor, inputs: Tensor) -> Tensor:
        out, _ = self.gru(inputs, self._initial_hidden(features))
        return self.head(out)

    def _step(self, inputs: Tensor, hidden: Tensor) -> tuple[Tensor, Tensor]:
        """One step from batch-first hidden (N, layers, H) to logits (N, V) and the new batch-first hidden."""
        out, hidden = self.gru(inputs, hidden.transpose(0, 1).contiguous())
        return self.head(out[:, -1]), hidden.transpose(0, 1)

    def start(self, features: Tensor) -> tuple[Tensor, DecoderState]:
        image = self.image_projection(features)
        logits, hidden = self._step(self.first_input(image), self._initial_hidden(features).transpose(0, 1))
        return logits, (image, hidden)

    def advance(self, state: DecoderState, tokens: Tensor) -> tuple[Tensor, DecoderState]:
        image, hidden = state
        logits, hidden = self._step(self.word_inputs(image, tokens[:, None]), hidden)
        return logits, (image, hidden)


def _log_probs(logits: Tensor, unknown_id: int | None) -> Tensor:
    """Float log-softmax with <UKN> made impossible: taking the best remaining word is the study's top-2 rule."""
    log_p = torch.log_softmax(logits.float(), dim=-1)
    if unknown_id is not None and 0 <= unknown_id < log_p.shape[-1]:
        log_p[:, unknown_id] = -torch.inf
    return log_p


def greedy_decode(network: CaptionNetwork, features: Tensor, max_words: int, eos_id: int = EOS_ID,
                  unknown_id: int | None = 1, early_stop: bool = True) -> Tensor:
    """The most likely word at each step (never <UKN>) until every caption has ended: (N, max_words + 1)."""
    ids = torch.full((features.shape[0], max_words + 1), eos_id, dtype=torch.int64, device=features.device)
    finished = torch.zeros(features.shape[0], dtype=torch.bool, device=features.device)
    logits, state = network.start(features)
    for step in range(max_words):
        words = torch.where(finished, eos_id, _log_probs(logits, unknown_id).argmax(dim=-1))
        ids[:, step] = words
        finished |= words == eos_id
        if step == max_words - 1 or (early_stop and bool(finished.all())):  # one sync per word
            break
        logits, state = network.advance(state, words)
    return ids


def beam_search(network: CaptionNetwork, features: Tensor, max_words: int, beam_size: int,
                eos_id: int = EOS_ID, unknown_id: int | None = 1, early_stop: bool = True) -> Tensor:
    """The highest sum of log-probabilities among `beam_size` hypotheses per image: (N, max_words + 1).

    An ended hypothesis stays in the beam, extended by EOS at no cost, so finished and open
    hypotheses compete on the same score; a caption cut at max_words is scored without its EOS.
    """
    n, device = features.shape[0], features.device
    logits, state = network.start(features)
    scores, words = _log_probs(logits, unknown_id).topk(min(beam_size, logits.shape[-1]), dim=-1)
    beams = scores.shape[1]
    vocabulary = logits.shape[-1]
    state = tuple(s.repeat_interleave(beams, dim=0) for s in state)
    sequences, scores = words.reshape(n * beams, 1), scores.reshape(n * beams)
    finished = sequences[:, 0] == eos_id
    ended = torch.full((vocabulary,), -torch.inf, device=device)
    ended[eos_id] = 0.0
    first_row = torch.arange(n, device=device)[:, None] * beams
    for _ in range(1, max_words):
        if early_stop and bool(finished.all()):
            break
        logits, state = network.advance(state, sequences[:, -1])
        log_p = torch.where(finished[:, None], ended, _log_probs(logits, unknown_id))
        scores, index = (scores[:, None] + log_p).view(n, beams * vocabulary).topk(beams, dim=-1)
        parents = (first_row + torch.div(index, vocabulary, rounding_mode="floor")).flatten()
        words = (index % vocabulary).flatten()
        state = tuple(s[parents] for s in state)
        sequences = torch.cat([sequences[parents], words[:, None]], dim=1)
        scores, finished = scores.flatten(), finished[parents] | (words == eos_id)
    best = first_row[:, 0] + scores.view(n, beams).argmax(dim=-1)
    ids = torch.full((n, max_words + 1), eos_id, dtype=torch.int64, device=device)
    ids[:, :sequences.shape[1]] = sequences[best]
    return ids


def folded_weight_norms(network: _Network) -> _Network:
    """A copy with every parametrised weight (weight norm) folded into a plain parameter: the same outputs, and
    the unrolled decoding loop no longer recomputes each weight at every step (a third of the traced graph).

    Not `parametrize.remove_parametrizations` on a deepcopy: the copy shares its generated class with the
    original, and removing the class's property would break the network being trained.
    """
    from torch.nn.utils import parametrize

    folded = copy.deepcopy(network)
    for module in folded.modules():
        if parametrize.is_parametrized(module):
            parametrizations = module.parametrizations
            assert isinstance(parametrizations, nn.ModuleDict)  # what `parametrize` registers
            values = {name: getattr(module, name).detach().clone() for name in parametrizations}
            del module._modules["parametrizations"]
            module.__class__ = module.__class__.__bases__[0]  # parametrize's generated subclass -> the original
            for name, value in values.items():
                module.register_parameter(name, nn.Parameter(value, requires_grad=False))
    return folded


class CaptionExport(nn.Module):
    """What gets exported: images in [0, 1] -> int64 (N, max_words + 1) word ids (EOS-padded).

    Every step runs (no early stop), so torch.export can trace it; eager callers (`stride
    predict --beam-size`) may pass `early_stop=True` for speed: the ids are the same.
    """

    def __init__(self, network: CaptionNetwork, max_words: int = 50, beam_size: int = 1, early_stop: bool = False):
        super().__init__()
        self.network = folded_weight_norms(network)
        self.max_words, self.beam_size, self.early_stop = max_words, beam_size, early_stop

    def forward(self, images: Tensor) -> Tensor:
        return self.network.generate(images, max_words=self.max_words, beam_size=self.beam_size,
                                     early_stop=self.early_stop)


def _check_input(name: str, input_shape: tuple[int, ...], num_classes: int) -> None:
    if len(input_shape) != 3 or input_shape[0] != 3:
        raise StrideError(f"architecture {name!r} takes 3-channel images (C, H, W); the data's input shape is "
                          f"{tuple(input_shape)}")
    if num_classes < 3:
        raise StrideError(f"architecture {name!r}: the vocabulary has {num_classes} words; it needs <EOS>, <UKN> "
                          "and at least one word")


@register("caption_tcn", task="captioning")
def build_caption_tcn(
    *,
    input_shape: tuple[int, ...],
    num_classes: int,
    embedding_size: PositiveInt = 512,
    channels: PositiveInt = 256,
    num_blocks: PositiveInt = 18,
    kernel_size: PositiveInt = 2,
    dilation_schedule: DilationSchedule = "constant",
    dropout: DropProbability = 0.2,
    weight_norm: bool = True,
    image_conditioning: ImageConditioning = "first_step",
    encoder_weights: str | None = None,
    freeze_encoder: bool = False,
) -> nn.Module:
    """ResNet-18 + TCN captioner: 18 Single blocks, k=2, dilation 1, 256 channels (receptive field 37 steps).

    The study states 39 steps for this TCN; eq. 62 gives 1 + 18 * 2 * (2 - 1) = 37. Dropout and
    weight normalisation are those of the study's TCN blocks (section 7). `num_classes` is the
    vocabulary size.
    """
    _check_input("caption_tcn", input_shape, num_classes)
    shared = dict(vocabulary_size=num_classes, embedding_size=embedding_size, image_conditioning=image_conditioning,
                  encoder_weights=encoder_weights, freeze_encoder=freeze_encoder)
    tcn = TCN(decoder_input_size(embedding_size, image_conditioning), num_classes, "single",
              dilations(dilation_schedule, num_blocks), channels, kernel_size,
              dropout, "left", weight_norm)
    return TCNCaptioner(tcn, **shared)


@register("caption_gru", task="captioning")
def build_caption_gru(
    *,
    input_shape: tuple[int, ...],
    num_classes: int,
    embedding_size: PositiveInt = 512,
    hidden_size: PositiveInt = 512,
    num_layers: PositiveInt = 3,
    dropout: DropProbability = 0.0,
    image_conditioning: ImageConditioning = "first_step",
    initial_state: InitialState = "every_layer",
    encoder_weights: str | None = None,
    freeze_encoder: bool = False,
) -> nn.Module:
    """ResNet-18 + GRU captioner: 3 layers x 512, the image vector the initial hidden state of every layer
    (`initial_state: first_layer`: of the first only, as the study writes it; docs/models.md, A4).

    `num_classes` is the vocabulary size.
    """
    _check_input("caption_gru", input_shape, num_classes)
    return GRUCaptioner(hidden_size, num_layers, dropout, initial_state, vocabulary_size=num_classes,
                        embedding_size=embedding_size,
                        image_conditioning=image_conditioning, encoder_weights=encoder_weights,
                        freeze_encoder=freeze_encoder)
