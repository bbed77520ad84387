"""The backbone protocol: what AIM needs from a frozen multimodal LLM, in the LLM's own tensors.

A prompt is a list of segments: text (``str``), images (``PIL.Image``) and ``Virtual`` runs of
precomputed embeddings (fused demonstrations). Every adapter turns one prompt into input
embeddings and position ids exactly as its Hugging Face model would (``_encode``); everything else
here (padding, forward passes, reading demonstrations, greedy generation) is shared.
"""
from __future__ import annotations

import abc
import functools
import inspect
import logging
from dataclasses import dataclass, field
from typing import Optional, Sequence, Union

import torch
from PIL import Image

from ..data.record import Demo
from ..errors import BackboneError
from ..images import ImageLike, load_image

logger = logging.getLogger(__name__)

BODY_MARKER = "\u2063AIMBODY\u2063"


@functools.lru_cache(maxsize=None)
def cache_argument(decoder_class: type) -> str:
    """The name under which ``decoder_class.forward`` takes its KV cache: ``cache`` in recent
    transformers (5.25 warns on ``past_key_values``), ``past_key_values`` in older 5.x releases."""
    return "cache" if "cache" in inspect.signature(decoder_class.forward).parameters else "past_key_values"


def output_cache(out):
    """The KV cache a decoder returned (``out.cache``, or ``out.past_key_values`` in older releases)."""
    cache = getattr(out, "cache", None)
    return cache if cache is not None else getattr(out, "past_key_values", None)


@dataclass
class Virtual:
    """Precomputed embeddings put into a prompt as they are. ``embeds``: (tokens, hidden)."""

    embeds: torch.Tensor

    def __len__(self) -> int:
        return self.embeds.shape[0]


Segment = Union[str, Image.Image, Virtual]


@dataclass
class Encoded:
    """One prompt, unpadded. ``embeds`` (L, hidden); ``position_ids`` (L,) or (P, L) for
    multi-axis rope (Qwen2-VL: P=3); ``input_ids`` (L,) with a placeholder id at virtual
    positions; ``last_span``: [start, end) of the prompt's last segment when asked for (a token
    that spans the boundary belongs to the last segment)."""

    embeds: torch.Tensor
    position_ids: torch.Tensor
    input_ids: torch.Tensor
    last_span: Optional[tuple[int, int]] = None


@dataclass
class PromptBatch:
    """Left-padded prompts. ``inputs_embeds`` (B, L, hidden), ``attention_mask`` (B, L),
    ``position_ids`` (B, L) or (P, B, L), ``input_ids`` (B, L) (pad id where padded);
    ``last_spans``: per row, [start, end) of its last segment in padded positions, when asked for."""

    inputs_embeds: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    input_ids: torch.Tensor
    last_spans: list = field(default_factory=list)

    @property
    def lengths(self) -> list[int]:
        """Prompt tokens per row (image tokens and fused tokens included)."""
        return self.attention_mask.sum(1).tolist()


@dataclass
class DemoStates:
    """A demonstration read by the backbone: ``hidden`` (T, hidden) at its T text positions,
    computed with the image in context; ``token_ids`` (T,) the text tokens themselves."""

    hidden: torch.Tensor
    token_ids: torch.Tensor


@dataclass
class Generation:
    """One generated answer with its cost in tokens."""

    text: str
    prompt_tokens: int
    new_tokens: int


@dataclass
class Likelihood:
    """How likely a continuation is after a prompt: ``logprob`` the sum of its tokens'
    log-probabilities, ``tokens`` how many tokens it has, ``greedy`` whether every one of them is
    the model's argmax (lmms-eval's ``is_greedy``)."""

    logprob: float
    tokens: int
    greedy: bool


class Backbone(abc.ABC):
    """A frozen MLLM behind one interface. Subclasses set ``family`` and implement ``_encode``,
    ``decoder``, ``lm_head``, ``tokenizer`` and ``model_id``."""

    family: str = "base"
    #: whether the family loads with no path (``load_backbone("pocket")``): its weights ship with it
    ships_weights: bool = False
    #: how a demonstration reads as text, after its image
    demo_template: str = "Question: {question}\nAnswer: {answer}\n"
    #: how the query reads after its image; the model answers in its own turn
    query_template: str = "Question: {question}\nAnswer the question using a single word or phrase."
    #: text that starts the model's turn before it generates (e.g. "Answer:")
    answer_prefix: str = ""
    #: whether prompts may hold images (a text-only LLM behind this protocol says False)
    accepts_images: bool = True

    def __init__(self, model_id: str, dtype: torch.dtype = torch.float32, device: str = "cpu", layer: int = -1):
        self.model_id = model_id
        self.dtype = dtype
        self.device = torch.device(device)
        self.layer = layer
        self._chat_parts: Optional[tuple[str, str, str]] = None

    # ----------------------------------------------------------------- to implement
    @property
    @abc.abstractmethod
    def tokenizer(self):
        """The LLM's tokenizer."""

    @property
    @abc.abstractmethod
    def decoder(self) -> torch.nn.Module:
        """The LLM's decoder stack: takes inputs_embeds, attention_mask, position_ids."""

    @property
    @abc.abstractmethod
    def lm_head(self) -> torch.nn.Module:
        """hidden (..., hidden) -> logits (..., vocab)."""

    @abc.abstractmethod
    def _encode(self, segments: Sequence[Segment], last_span: bool = False) -> Encoded:
        """One prompt (segments already wrapped in the chat template) -> its embeddings."""

    def _encode_many(self, prompts: Sequence[Sequence[Segment]], last_span: bool = False) -> list[Encoded]:
        return [self._encode(p, last_span=last_span) for p in prompts]

    def revision(self) -> Optional[str]:
        return None

    # ----------------------------------------------------------------- what ships with it
    def shipped_fuser(self) -> Optional[str]:
        """The folder of a fuser that ships with this backbone (used when no ``--fuser`` is given),
        or None."""
        return None

    def training_sequences(self, seed: int, max_shots: int):
        """The backbone's own training data for ``aim train fuser`` without ``--data``: an object with
        ``sample(rng) -> aim.training.sequences.TrainSequence`` and a ``description``; or None."""
        return None

    # ----------------------------------------------------------------- shared
    @property
    def hidden_size(self) -> int:
        return self.input_embeddings.weight.shape[1]

    @property
    def context_length(self) -> Optional[int]:
        """The most positions the LLM was built for (its config's ``max_position_embeddings``), or
        None when the config does not say. Prompt plus generated tokens must fit in it."""
        config = getattr(self.decoder, "config", None)
        for name in ("max_position_embeddings", "max_sequence_length", "n_positions"):
            value = getattr(config, name, None)
            if isinstance(value, int) and value > 0:
                return value
        return None

    @property
    def input_embeddings(self) -> torch.nn.Embedding:
        return self.decoder.get_input_embeddings()

    def embed_tokens(self, token_ids: torch.Tensor) -> torch.Tensor:
        """Token ids (...,) -> input embeddings (..., hidden)."""
        return self.input_embeddings(token_ids.to(self.device))

    def fingerprint(self, layer: Optional[int] = None) -> dict:
        """What a bank or a fuser must match: family, model, revision, dtype, hidden size, layer."""
        return {
            "family": self.family,
            "model": self.model_id,
            "revision": self.revision(),
            "dtype": str(self.dtype).replace("torch.", ""),
            "hidden_size": self.hidden_size,
            "layer": self.layer if layer is None else layer,
        }

    def chat_parts(self) -> tuple[str, str, str]:
        """(prefix, suffix with the generation prompt, suffix without) around a user turn."""
        if self._chat_parts is None:
            tok = self.tokenizer
            if getattr(tok, "chat_template", None):
                msgs = [{"role": "user", "content": BODY_MARKER}]
                gen = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
                plain = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=False)
                prefix, gen_suffix = gen.split(BODY_MARKER)
                _, suffix = plain.split(BODY_MARKER)
            else:
                prefix, gen_suffix, suffix = self.default_chat_parts()
            self._chat_parts = (prefix, gen_suffix, suffix)
        return self._chat_parts

    def default_chat_parts(self) -> tuple[str, str, str]:
        """Used when the tokenizer has no chat template."""
        return "", "", ""

    @property
    def end_of_turn(self) -> str:
        """The text that closes a turn in the chat template ("<|im_end|>" for SmolLM2 and Qwen2-VL),
        what a training target ends with so the model learns to stop; "" without a template."""
        return self.chat_parts()[2].rstrip()

    def body_chat_parts(self, body: Sequence[Segment]) -> tuple[str, str, str]:
        """The chat parts around this body (templates may render an image-first turn differently)."""
        return self.chat_parts()

    def wrap(self, body: Sequence[Segment], generation: bool = True) -> list[Segment]:
        """Put a prompt body inside one user turn of the chat template."""
        prefix, gen_suffix, _ = self.body_chat_parts(body)
        out: list[Segment] = ([prefix] if prefix else []) + list(body)
        if generation and gen_suffix + self.answer_prefix:
            out.append(gen_suffix + self.answer_prefix)
        return out

    def encode(self, bodies: Sequence[Sequence[Segment]], generation: bool = True, last_span: bool = False,
               chat: bool = True) -> PromptBatch:
        """Prompt bodies -> a left-padded batch (see PromptBatch)."""
        prompts = [self.wrap(b, generation) if chat else list(b) for b in bodies]
        return self.pad(self._encode_many(prompts, last_span=last_span))

    def pad(self, items: Sequence[Encoded]) -> PromptBatch:
        """Left padding; real tokens keep the positions they had alone, so padding changes nothing."""
        n, hidden = len(items), items[0].embeds.shape[-1]
        length = max(e.embeds.shape[0] for e in items)
        multi = items[0].position_ids.dim() == 2
        embeds = torch.zeros(n, length, hidden, dtype=items[0].embeds.dtype, device=self.device)
        mask = torch.zeros(n, length, dtype=torch.long, device=self.device)
        ids = torch.full((n, length), self.pad_id, dtype=torch.long, device=self.device)
        if multi:
            pos = torch.ones(items[0].position_ids.shape[0], n, length, dtype=torch.long, device=self.device)
        else:
            pos = torch.ones(n, length, dtype=torch.long, device=self.device)
        spans = []
        for i, e in enumerate(items):
            size = e.embeds.shape[0]
            embeds[i, length - size:] = e.embeds
            mask[i, length - size:] = 1
            ids[i, length - size:] = e.input_ids
            pos[..., i, length - size:] = e.position_ids
            shift = length - size
            spans.append((e.last_span[0] + shift, e.last_span[1] + shift) if e.last_span else None)
        return PromptBatch(embeds, mask, pos, ids, spans)

    @property
    def pad_id(self) -> int:
        tok = self.tokenizer
        for cand in (tok.pad_token_id, tok.eos_token_id, 0):
            if cand is not None:
                return int(cand)
        return 0

    def run(self, batch: PromptBatch, hidden_states: bool = False, cache=None, use_cache: bool = False):
        """One forward of the LLM over a batch; returns the decoder's output (its KV cache in
        ``output_cache(out)``)."""
        return self.decoder(
            inputs_embeds=batch.inputs_embeds,
            attention_mask=batch.attention_mask,
            position_ids=batch.position_ids,
            use_cache=use_cache,
            output_hidden_states=hidden_states,
            **{cache_argument(type(self.decoder)): cache},
        )

    @torch.no_grad()
    def next_token_logits(self, batch: PromptBatch) -> torch.Tensor:
        """(B, vocab) logits for the token after each prompt."""
        out = self.run(batch)
        return self.lm_head(out.last_hidden_state[:, -1]).float()

    # ----------------------------------------------------------------- prompts
    def demo_text(self, demo: Demo) -> str:
        return self.demo_template.format(question=demo.question, answer=demo.answer)

    def query_text(self, question: str) -> str:
        return self.query_template.format(question=question)

    def query_body(self, image: Optional[ImageLike], question: str) -> list[Segment]:
        body: list[Segment] = [load_image(image)] if image is not None else []
        return body + [self.query_text(question)]

    def zero_shot_prompts(self, images: Sequence[Optional[ImageLike]], questions: Sequence[str]) -> PromptBatch:
        """The query alone: image + question in a user turn, then the answer prompt."""
        return self.encode([self.query_body(i, q) for i, q in zip(images, questions)])

    def raw_icl_body(self, demos: Sequence[Demo], image: Optional[ImageLike], question: str) -> list[Segment]:
        """Interleaved multi-image prompt: k raw demonstrations, then the query."""
        body: list[Segment] = []
        for d in demos:
            if d.image is not None:
                body.append(load_image(d.image))
            body.append(self.demo_text(d))
        return body + self.query_body(image, question)

    def demo_token_ids(self, demo: Demo) -> torch.Tensor:
        """The tokens of a demonstration's text, tokenized on its own (as ``read_demos`` reads it)."""
        ids = self.tokenizer(self.demo_text(demo), add_special_tokens=False).input_ids
        return torch.tensor(ids, dtype=torch.long, device=self.device)

    def text_icl_body(self, demos: Sequence[Demo], image: Optional[ImageLike], question: str) -> list[Segment]:
        """k demonstrations as text only, then the query with its image. Each demonstration is
        tokenized on its own and enters as its token embeddings, so the text-only and the fused
        prompts differ only in what fills the demonstration positions (a joined string could merge
        tokens across a boundary, e.g. "USER: " + "Question" -> " Question")."""
        demo_segments: list[Segment] = [Virtual(self.embed_tokens(self.demo_token_ids(d))) for d in demos]
        return demo_segments + self.query_body(image, question)

    # ----------------------------------------------------------------- demonstrations
    @torch.no_grad()
    def read_demos(self, demos: Sequence[Demo], layer: Optional[int] = None) -> list[DemoStates]:
        """Per demonstration, the hidden states of ``layer`` (default: the backbone's, last = -1)
        at its text positions, computed with its image in context. Text positions are the tokens
        of ``demo_text(demo)``; chat-template tokens and image tokens are not among them."""
        layer = self.layer if layer is None else layer
        bodies = []
        for d in demos:
            body: list[Segment] = [load_image(d.image)] if d.image is not None else []
            bodies.append(body + [self.demo_text(d)])
        batch = self.encode(bodies, generation=False, last_span=True)
        out = self.run(batch, hidden_states=True)
        states = out.hidden_states[layer]
        result = []
        for i, (start, end) in enumerate(batch.last_spans):
            result.append(DemoStates(states[i, start:end].clone(), batch.input_ids[i, start:end].clone()))
        return result

    @torch.no_grad()
    def image_features(self, images: Sequence[ImageLike]) -> torch.Tensor:
        """Pooled image features for retrieval keys: the mean of each image's embeddings as the
        LLM receives them. (N, hidden), float32."""
        return torch.stack([e.float().mean(0) for e in self.image_embeddings(images)])

    @torch.no_grad()
    def image_embeddings(self, images: Sequence[ImageLike]) -> list[torch.Tensor]:
        """Each image's embeddings as the LLM receives them, (image tokens, hidden) per image."""
        batch = self.encode([[load_image(i)] for i in images], chat=False, last_span=True)
        return [batch.inputs_embeds[i, start:end] for i, (start, end) in enumerate(batch.last_spans)]

    # ----------------------------------------------------------------- likelihood
    def continuation_text(self, answer: str) -> str:
        """How an answer reads when the model writes it after the prompt: with a leading space, as
        the pocket's stage 2 and ``aim train fuser`` train targets."""
        return " " + answer

    def continuation_logits(self, prompts: Sequence[Sequence[Segment]]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per prompt (already in the chat template; its last segment is the continuation text):
        the logits that predict the continuation's tokens, (T, vocab) float32, and those tokens (T,).
        The prompt and its continuation are tokenized together; a token that spans the boundary
        belongs to the continuation. Gradients flow as the caller's context says."""
        return [(logits, tokens) for _, logits, tokens in self._continuation(prompts, layers=False)]

    def continuation_states(self, prompts: Sequence[Sequence[Segment]]) -> list[tuple]:
        """As ``continuation_logits``, with every decoder layer's output at the positions that predict
        the continuation: per prompt (states (layers, T, hidden), logits (T, vocab), tokens (T,))."""
        return self._continuation(prompts, layers=True)

    def _continuation(self, prompts, layers: bool) -> list[tuple]:
        batch = self.encode(prompts, last_span=True, chat=False)
        out = self.run(batch, hidden_states=layers)
        states = torch.stack(out.hidden_states[1:]) if layers else None  # (layers, B, L, hidden)
        hidden = out.last_hidden_state
        result = []
        for i, (start, end) in enumerate(batch.last_spans):
            if end <= start or start == 0:
                raise ValueError(f"prompt {i}: the continuation {prompts[i][-1]!r} has no tokens of its own, or "
                                 "nothing precedes it (give a non-empty continuation after a prompt)")
            result.append((states[:, i, start - 1:end - 1] if layers else None,
                           self.lm_head(hidden[i, start - 1:end - 1]).float(), batch.input_ids[i, start:end]))
        return result

    @torch.no_grad()
    def loglikelihood(self, bodies: Sequence[Sequence[Segment]], continuations: Sequence[str],
                      batch_size: int = 8) -> list[Likelihood]:
        """Per (prompt body, continuation): the log-probability of the continuation after the body
        in the chat template with the model's turn open (the prompt ``generate`` answers), summed
        over its tokens. Bodies are those of ``aim.prompting`` (zero, raw, text or fused); the
        continuation is taken as given (``continuation_text`` adds the usual leading space).
        Batched rows are left-padded, so each row's figure equals that row alone."""
        if len(bodies) != len(continuations):
            raise ValueError(f"{len(bodies)} prompts but {len(continuations)} continuations")
        out: list[Likelihood] = []
        for s in range(0, len(bodies), batch_size):
            prompts = [self.wrap(b) + [c] for b, c in zip(bodies[s:s + batch_size], continuations[s:s + batch_size])]
            for logits, labels in self.continuation_logits(prompts):
                logprobs = torch.log_softmax(logits, -1)
                picked = logprobs.gather(1, labels[:, None])[:, 0]
                greedy = bool((logits.argmax(-1) == labels).all())
                out.append(Likelihood(float(picked.sum()), len(labels), greedy))
        return out

    @torch.no_grad()
    def rank_classes(self, batch: PromptBatch, classes: Sequence[Sequence[str]]) -> list[list[Likelihood]]:
        """Rank classification (open_flamingo's ImageNet and Hateful Memes method) over an encoded
        batch of prompts (``encode`` / ``aim.prompting.assemble``, as ``generate`` takes it): per
        prompt, the log-likelihood of every class name of its list, as ``continuation_text`` writes
        it, tokenized on its own after the prompt. The prompt runs once; each class then continues
        from a copy of its KV cache. Returns one list per prompt, in its classes' order; the argmax
        is the prediction."""
        import copy

        n = batch.inputs_embeds.shape[0]
        prompt = self.run(batch, use_cache=True)
        first = torch.log_softmax(self.lm_head(prompt.last_hidden_state[:, -1]).float(), -1)
        rows: list[list] = [[None] * len(names) for names in classes]
        for name in dict.fromkeys(c for names in classes for c in names):
            ids = self.tokenizer(self.continuation_text(name), add_special_tokens=False).input_ids
            if not ids:
                raise ValueError(f"class {name!r} has no tokens: give non-empty class names")
            t = len(ids)
            tokens = torch.tensor(ids, dtype=torch.long, device=self.device).expand(n, t)
            logprob, greedy = first[:, ids[0]].clone(), first.argmax(-1) == ids[0]
            if t > 1:
                mask = torch.cat([batch.attention_mask, batch.attention_mask.new_ones(n, t)], dim=1)
                pos = batch.position_ids[..., -1:] + torch.arange(1, t + 1, device=self.device)
                step = PromptBatch(self.embed_tokens(tokens).to(batch.inputs_embeds.dtype), mask, pos, tokens)
                more = self.run(step, cache=copy.deepcopy(output_cache(prompt)), use_cache=True)
                logits = self.lm_head(more.last_hidden_state[:, :-1]).float()
                logprob = logprob + torch.log_softmax(logits, -1).gather(2, tokens[:, 1:, None])[..., 0].sum(1)
                greedy = greedy & (logits.argmax(-1) == tokens[:, 1:]).all(1)
            for i, names in enumerate(classes):
                if name in names:
                    rows[i][names.index(name)] = Likelihood(float(logprob[i]), t, bool(greedy[i]))
        return rows

    # ----------------------------------------------------------------- generation
    def generation_model(self):
        """The transformers model whose own ``generate`` takes this backbone's ``inputs_embeds`` and
        attention mask, for beam search; None where there is none."""
        return None

    def _answer_end_ids(self) -> list[int]:
        """The tokens that end an answer: the tokenizer's EOS and the family's end-of-turn tokens."""
        return [t for t in [self.tokenizer.eos_token_id] + list(getattr(self, "extra_eos_ids", [])) if t is not None]

    def _finished(self, batch: PromptBatch, tokens: Sequence[Sequence[int]], stop: Sequence[str]) -> list[Generation]:
        """The new tokens of each row as answers, cut at the first stop string."""
        results = []
        for i, row in enumerate(tokens):
            text = self.tokenizer.decode(row, skip_special_tokens=True).lstrip()
            for s in stop:
                text = text.split(s)[0]
            results.append(Generation(text.strip(), int(batch.attention_mask[i].sum()), len(row)))
        return results

    @torch.no_grad()
    def beam_search(self, batch: PromptBatch, max_new_tokens: int = 16, stop: Sequence[str] = ("\n",),
                    num_beams: int = 3, length_penalty: float = 1.0) -> list[Generation]:
        """Beam search through transformers' ``generate`` from ``inputs_embeds`` (open_flamingo's
        VQA and captioning decode with 3 beams): the prompt's own attention mask; positions are
        recomputed from the mask, which equals ours for left-padded 1-D positions. The best beam
        is cut at the first stop string."""
        model = self.generation_model()
        if model is None or batch.position_ids.dim() == 3:
            raise BackboneError(f"beam search is not available for the {self.family} family: transformers' generate "
                                "cannot take its prompt as embeddings (multi-axis rope positions); use --num-beams 1")
        eos = self._answer_end_ids()
        out = model.generate(inputs_embeds=batch.inputs_embeds, attention_mask=batch.attention_mask,
                             max_new_tokens=max_new_tokens, num_beams=num_beams, length_penalty=length_penalty,
                             do_sample=False, eos_token_id=eos or None, pad_token_id=self.pad_id,
                             num_return_sequences=1)
        rows = []
        for new in out.tolist():
            while new and (new[-1] in eos or new[-1] == self.pad_id):
                new.pop()
            rows.append(new)
        return self._finished(batch, rows, stop)

    @torch.no_grad()
    def generate(self, batch: PromptBatch, max_new_tokens: int = 16, stop: Sequence[str] = ("\n",),
                 temperature: float = 0.0, seed: int = 0, num_beams: int = 1,
                 length_penalty: float = 1.0) -> list[Generation]:
        """Decoding from inputs_embeds with a KV cache: greedy by default, sampling at ``temperature``
        > 0 (seeded); stops at EOS or a stop string. ``num_beams`` > 1: ``beam_search``."""
        if num_beams > 1:
            return self.beam_search(batch, max_new_tokens, stop, num_beams, length_penalty)
        generator = torch.Generator(device=self.device).manual_seed(seed) if temperature > 0 else None
        tok = self.tokenizer
        eos = set(self._answer_end_ids())
        n = batch.inputs_embeds.shape[0]
        out = self.run(batch, use_cache=True)
        cache = output_cache(out)
        logits = self.lm_head(out.last_hidden_state[:, -1])
        mask, pos = batch.attention_mask, batch.position_ids[..., -1:]
        tokens: list[list[int]] = [[] for _ in range(n)]
        done = [False] * n
        for _ in range(max_new_tokens):
            if generator is None:
                nxt = logits.argmax(-1)
            else:
                probs = torch.softmax(logits.float() / temperature, dim=-1)
                nxt = torch.multinomial(probs, 1, generator=generator)[:, 0]
            for i in range(n):
                if done[i]:
                    continue
                t = int(nxt[i])
                if t in eos:
                    done[i] = True
                    continue
                tokens[i].append(t)
                text = tok.decode(tokens[i], skip_special_tokens=True).lstrip()
                if any(s in text for s in stop):
                    done[i] = True
            if all(done):
                break
            mask = torch.cat([mask, mask.new_ones(n, 1)], dim=1)
            pos = pos + 1
            step = PromptBatch(self.embed_tokens(nxt[:, None]).to(batch.inputs_embeds.dtype), mask, pos,
                               nxt[:, None])
            out = self.run(step, cache=cache, use_cache=True)
            cache = output_cache(out)
            logits = self.lm_head(out.last_hidden_state[:, -1])
        return self._finished(batch, tokens, stop)

    def answer(self, images: Sequence[Optional[ImageLike]], questions: Sequence[str],
               max_new_tokens: int = 16) -> list[Generation]:
        """Zero-shot answers to a batch of questions."""
        return self.generate(self.zero_shot_prompts(images, questions), max_new_tokens=max_new_tokens)
