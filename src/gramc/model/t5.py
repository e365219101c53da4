"""A compact T5 encoder-decoder, written for GRAM-C, that loads and exports Hugging Face T5 weights.

It computes exactly what `transformers.T5ForConditionalGeneration` computes (tested to 1e-4 on
random weights, for original T5 (ReLU, tied LM head) and T5 v1.1 / Flan-T5 (gated GELU, own LM
head)), but its API is shaped for generative recommendation:

* **Soft prefix in the encoder.** `encode(ids, mask, prefix, prefix_mask)` prepends `K` soft
  tokens (vectors of size `d_model`, e.g. projected collaborative embeddings) to the token
  embeddings; relative positions then run over all `K + L` positions.
* **Cross-attention keys/values computed once per memory row and shared by beams.**
  `cross_kv(memory)` projects the encoder memory `[B, M, d]` of every decoder layer once.
  `decode(dec_ids [B, G, T], ...)` runs `G` hypotheses (beams) per memory row: the cross-attention
  queries of the `G` hypotheses are folded into one `[B, H, G*T, d_kv]` block against keys
  `[B, H, M, d_kv]`, so the memory is never copied per beam.
* **A plain self-attention cache.** `decode` returns a list, one `(k, v)` per decoder layer, each
  `[B*G, H, t, d_kv]`; row `b*G + g` is hypothesis `g` of memory row `b`. The caller reorders it
  after a beam step with `index_select(0, idx)` (see `reorder_cache`) and passes `start=t` next.

Reading order: dimensions (`T5Dims`), building blocks (norm, feed-forward, relative position
bias, attention), the two stacks, then `T5` with its public API and the Hugging Face weight mapping.
Attention uses `torch.nn.functional.scaled_dot_product_attention` with an additive float bias
(relative positions + masks) and `scale=1.0` (T5 folds the 1/sqrt(d) into its initialisation),
except when training on the CPU, where it is written out (`Attention.attend_explicit`) with a
cheaper dropout mask (`dropout_mask`); a teacher-forced pass may hand the decoder the memory itself
instead of its projected keys/values (`Cross`, `Attention.attend_memory`).
Masked keys get the dtype's most negative value rather than -inf, so fully masked rows give a
uniform (finite) attention instead of NaN.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from ..ids.tokens import IGNORE_INDEX, PAD_ID

# One self-attention cache entry per decoder layer: (keys, values), each [B*G, H, t, d_kv].
Cache = list[tuple[Tensor, Tensor]]
# Cross-attention keys/values per decoder layer, each [B, H, M, d_kv].
CrossKV = list[tuple[Tensor, Tensor]]
# What the decoder cross-attends to: the projected keys/values of every layer (`T5.cross_kv`, for
# many decoding steps over one memory), or the memory `[B, M, d]` itself, whose key and value
# projections are then folded into the queries (`Attention.attend_memory`, for one teacher-forced pass).
Cross = CrossKV | Tensor


# ----------------------------------------------------------------------------------------------
# Dimensions
# ----------------------------------------------------------------------------------------------


@dataclass
class T5Dims:
    """Shape and flavour of a T5; mirrors the fields of `transformers.T5Config` that matter."""

    vocab_size: int
    d_model: int
    d_kv: int
    d_ff: int
    num_layers: int  # encoder layers
    num_decoder_layers: int
    num_heads: int
    relative_attention_num_buckets: int = 32
    relative_attention_max_distance: int = 128
    dropout_rate: float = 0.1
    layer_norm_epsilon: float = 1e-6
    feed_forward_proj: Literal["relu", "gated-gelu"] = "relu"  # T5: relu; v1.1 / Flan: gated-gelu
    tie_word_embeddings: bool = True  # True: LM head = shared embedding, output scaled by d_model**-0.5

    def __post_init__(self) -> None:
        if self.feed_forward_proj not in ("relu", "gated-gelu"):
            raise ValueError(f"T5Dims.feed_forward_proj: expected 'relu' or 'gated-gelu', got {self.feed_forward_proj!r}")
        for name in ("vocab_size", "d_model", "d_kv", "d_ff", "num_layers", "num_decoder_layers", "num_heads",
                     "relative_attention_num_buckets", "relative_attention_max_distance"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"T5Dims.{name}: expected a positive integer, got {getattr(self, name)!r}")
        if not 0.0 <= self.dropout_rate < 1.0:
            raise ValueError(f"T5Dims.dropout_rate: expected a value in [0, 1), got {self.dropout_rate!r}")

    @property
    def inner_dim(self) -> int:
        """Width of the concatenated attention heads (`num_heads * d_kv`)."""
        return self.num_heads * self.d_kv

    @classmethod
    def preset(cls, name: str, vocab_size: int, dropout_rate: float = 0.1) -> "T5Dims":
        """`tiny` (CPU tests and smoke runs) or `small` (the dimensions of t5-small)."""
        if name == "tiny":
            return cls(vocab_size=vocab_size, d_model=128, d_kv=32, d_ff=512, num_layers=2, num_decoder_layers=2,
                       num_heads=4, dropout_rate=dropout_rate)
        if name == "small":
            return cls(vocab_size=vocab_size, d_model=512, d_kv=64, d_ff=2048, num_layers=6, num_decoder_layers=6,
                       num_heads=8, dropout_rate=dropout_rate)
        raise ValueError(f"T5Dims.preset: unknown preset {name!r}; expected 'tiny' or 'small'")

    @classmethod
    def from_hf_config(cls, cfg) -> "T5Dims":
        """From a `transformers.T5Config` (4.x and 5.x: 5.x keeps the tying flag as `scale_decoder_outputs`)."""
        tied = getattr(cfg, "scale_decoder_outputs", None)
        if tied is None:
            tied = bool(cfg.tie_word_embeddings)
        proj = cfg.feed_forward_proj
        if proj not in ("relu", "gated-gelu"):
            raise ValueError(f"T5 config: feed_forward_proj {proj!r} is not supported (expected 'relu' or 'gated-gelu')")
        return cls(vocab_size=cfg.vocab_size, d_model=cfg.d_model, d_kv=cfg.d_kv, d_ff=cfg.d_ff,
                   num_layers=cfg.num_layers, num_decoder_layers=cfg.num_decoder_layers or cfg.num_layers,
                   num_heads=cfg.num_heads, relative_attention_num_buckets=cfg.relative_attention_num_buckets,
                   relative_attention_max_distance=cfg.relative_attention_max_distance,
                   dropout_rate=cfg.dropout_rate, layer_norm_epsilon=cfg.layer_norm_epsilon,
                   feed_forward_proj=proj, tie_word_embeddings=bool(tied))

    def to_hf_config(self):
        """The equivalent `transformers.T5Config` (decoder start 0, pad 0, eos 1)."""
        from transformers import T5Config

        return T5Config(**asdict(self), decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)


# ----------------------------------------------------------------------------------------------
# Building blocks
# ----------------------------------------------------------------------------------------------


def dropout_mask(shape: torch.Size, p: float, device: torch.device) -> tuple[Tensor, float]:
    """(keep mask `shape` bool, 1 / keep probability) for dropout rate `p`, drawn from torch's generator.

    On the CPU, random numbers are what dropout costs: `bernoulli_` draws one 32-bit number per
    element. Here each 32-bit draw gives two 16-bit uniforms, and an element is kept when its 16 bits
    are at or above `round(p * 2**16)`: the keep probability is `1 - round(p * 2**16) / 2**16`
    (within 1e-5 of `1 - p`), and the scale is exactly its inverse, so the expectation is unchanged.
    """
    n = math.prod(shape)
    cut = round(p * 65536)
    bits = torch.randint(-2**31, 2**31 - 1, ((n + 1) // 2,), dtype=torch.int32, device=device)
    keep = bits.view(torch.int16)[:n].view(shape) >= cut - 32768
    return keep, 65536 / (65536 - cut)


def dropout(x: Tensor, p: float, training: bool) -> Tensor:
    """`F.dropout`, with `dropout_mask`'s cheaper mask on the CPU."""
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu" or p >= 1.0:
        return F.dropout(x, p, True)
    keep, scale = dropout_mask(x.shape, p, x.device)
    return x * keep.to(x.dtype).mul_(scale)


class Dropout(nn.Dropout):
    """`nn.Dropout` through `dropout` (same rate, same expectation, a cheaper mask on the CPU)."""

    def forward(self, x: Tensor) -> Tensor:
        return dropout(x, self.p, self.training)


class RMSNorm(nn.Module):
    """T5's layer norm: scale by the root mean square (no mean subtraction, no bias); stats in float32."""

    def __init__(self, d: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return (self.weight * x32).to(torch.promote_types(x.dtype, self.weight.dtype))


class FeedForward(nn.Module):
    """`wo(act(wi x))` (ReLU, original T5) or `wo(gelu(wi_0 x) * wi_1 x)` (gated GELU, T5 v1.1 / Flan)."""

    def __init__(self, dims: T5Dims):
        super().__init__()
        self.gated = dims.feed_forward_proj == "gated-gelu"
        if self.gated:
            self.wi_0 = nn.Linear(dims.d_model, dims.d_ff, bias=False)
            self.wi_1 = nn.Linear(dims.d_model, dims.d_ff, bias=False)
        else:
            self.wi = nn.Linear(dims.d_model, dims.d_ff, bias=False)
        self.wo = nn.Linear(dims.d_ff, dims.d_model, bias=False)
        self.dropout = Dropout(dims.dropout_rate)

    def forward(self, x: Tensor) -> Tensor:
        if self.gated:
            h = F.gelu(self.wi_0(x), approximate="tanh") * self.wi_1(x)
        else:
            h = F.relu(self.wi(x))
        return self.wo(self.dropout(h))


def relative_position_bucket(relative: Tensor, bidirectional: bool, num_buckets: int, max_distance: int) -> Tensor:
    """T5's bucketing of `key_pos - query_pos`: exact buckets for small distances, log-spaced up to `max_distance`.

    Bidirectional (encoder): half of the buckets for keys after the query, half for keys before.
    Unidirectional (decoder): keys after the query all fall into bucket 0 (they are masked anyway).
    """
    bucket = torch.zeros_like(relative)
    if bidirectional:
        num_buckets //= 2
        bucket = bucket + (relative > 0).long() * num_buckets
        distance = relative.abs()
    else:
        distance = (-relative).clamp(min=0)
    max_exact = num_buckets // 2
    # log-spaced buckets for distances in [max_exact, max_distance); everything further shares the last one
    log_ratio = torch.log(distance.float().clamp(min=1) / max_exact) / math.log(max_distance / max_exact)
    far = (max_exact + (log_ratio * (num_buckets - max_exact)).long()).clamp(max=num_buckets - 1)
    return bucket + torch.where(distance < max_exact, distance, far)


class RelativeBias(nn.Module):
    """A learned scalar per (bucket of relative position, head), added to attention scores."""

    def __init__(self, dims: T5Dims, bidirectional: bool):
        super().__init__()
        self.embedding = nn.Embedding(dims.relative_attention_num_buckets, dims.num_heads)
        self.bidirectional = bidirectional
        self.num_buckets = dims.relative_attention_num_buckets
        self.max_distance = dims.relative_attention_max_distance

    def forward(self, query_pos: Tensor, key_pos: Tensor) -> Tensor:
        """Positions (1-d LongTensors) -> bias `[1, H, len(query_pos), len(key_pos)]`."""
        relative = key_pos[None, :] - query_pos[:, None]
        buckets = relative_position_bucket(relative, self.bidirectional, self.num_buckets, self.max_distance)
        return self.embedding(buckets).permute(2, 0, 1).unsqueeze(0)


def key_mask_bias(bias: Tensor, allowed: Tensor, dtype: torch.dtype) -> Tensor:
    """Cast an additive bias to `dtype` and overwrite disallowed (False) entries with its most negative value.

    Overwriting (not adding) keeps the value finite, so a fully masked row softmaxes to uniform, not NaN.
    """
    bias = bias.to(dtype)
    shape = torch.broadcast_shapes(bias.shape, allowed.shape)
    return bias.expand(shape).masked_fill(~allowed, torch.finfo(dtype).min)


class Attention(nn.Module):
    """Multi-head attention with T5's projections (`q, k, v, o`, no biases, no 1/sqrt(d) scaling)."""

    def __init__(self, dims: T5Dims):
        super().__init__()
        self.num_heads, self.d_kv = dims.num_heads, dims.d_kv
        self.q = nn.Linear(dims.d_model, dims.inner_dim, bias=False)
        self.k = nn.Linear(dims.d_model, dims.inner_dim, bias=False)
        self.v = nn.Linear(dims.d_model, dims.inner_dim, bias=False)
        self.o = nn.Linear(dims.inner_dim, dims.d_model, bias=False)
        self.attn_dropout = Dropout(dims.dropout_rate)  # on attention weights

    def split_heads(self, x: Tensor) -> Tensor:
        """`[N, S, H*d_kv] -> [N, H, S, d_kv]`."""
        return x.unflatten(-1, (self.num_heads, self.d_kv)).transpose(1, 2)

    def project_kv(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Keys and values of `x [N, S, d]`, each `[N, H, S, d_kv]`."""
        return self.split_heads(self.k(x)), self.split_heads(self.v(x))

    def attend(self, q: Tensor, k: Tensor, v: Tensor, bias: Tensor) -> Tensor:
        """Heads `[N, H, Sq, d_kv]` against `[N, H, Sk, d_kv]` with additive `bias` -> merged `[N, Sq, d]`."""
        bias = bias.to(q.dtype)
        k, v = k.to(q.dtype), v.to(q.dtype)
        if self.training and self.attn_dropout.p > 0 and q.device.type == "cpu":
            out = self.attend_explicit(q, k, v, bias)
        else:
            dropout_p = self.attn_dropout.p if self.training else 0.0
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=dropout_p, scale=1.0)
        return self.o(out.transpose(1, 2).flatten(2))

    def attend_explicit(self, q: Tensor, k: Tensor, v: Tensor, bias: Tensor) -> Tensor:
        """What `scaled_dot_product_attention` computes (scale 1, additive bias), written out: heads
        `[N, H, Sq, d_kv]` -> `[N, H, Sq, d_kv]`. Used to train on the CPU, where SDPA with dropout
        falls back to a path that upcasts bf16 to fp32 and draws its mask with `bernoulli_`: here
        the matmuls stay in `q`'s dtype, the softmax is at least fp32, and dropout is `dropout`."""
        return torch.matmul(self.weights(torch.matmul(q, k.transpose(-1, -2)), bias, q.dtype), v)

    def weights(self, scores: Tensor, bias: Tensor, dtype: torch.dtype) -> Tensor:
        """Attention weights from raw scores: softmax of `scores + bias` in float32 at least, cast to
        `dtype`, then attention dropout (when training)."""
        acc = torch.promote_types(dtype, torch.float32)
        return self.attn_dropout(torch.softmax(scores.to(acc) + bias.to(acc), dim=-1).to(dtype))

    def attend_memory(self, q: Tensor, memory: Tensor, bias: Tensor) -> Tensor:
        """`attend(q, *project_kv(memory), bias)` without projecting the memory `[N, M, d]`.

        Per head h, `q_h . (W_k,h x) = (W_k,h^T q_h) . x` and `sum_m p_m W_v,h x_m = W_v,h (sum_m p_m x_m)`:
        the queries take the key projection and the attention-weighted memory takes the value
        projection. That costs `2 H Q d` per memory position instead of `2 d H d_kv` (the two
        projections), and builds no `[N, H, M, d_kv]` tensor: cheaper whenever the queries per memory
        row are few, as in one teacher-forced pass (Q = the target length). Softmax in float32 at least.
        """
        N, H, Q, dk = q.shape
        M, d = memory.shape[1], memory.shape[2]
        dtype = q.dtype
        memory = memory.to(dtype)
        qk = torch.matmul(q, self.k.weight.to(dtype).view(H, dk, d))  # [N, H, Q, d]
        scores = torch.matmul(qk.reshape(N, H * Q, d), memory.transpose(1, 2)).view(N, H, Q, M)
        probs = self.weights(scores, bias, dtype)
        ctx = torch.matmul(probs.view(N, H * Q, M), memory).view(N, H, Q, d)
        out = torch.matmul(ctx, self.v.weight.to(dtype).view(H, dk, d).transpose(1, 2))  # [N, H, Q, d_kv]
        return self.o(out.transpose(1, 2).flatten(2))


# ----------------------------------------------------------------------------------------------
# The two stacks
# ----------------------------------------------------------------------------------------------


class EncoderLayer(nn.Module):
    """Pre-norm self-attention then feed-forward, each added back to the residual stream."""

    def __init__(self, dims: T5Dims):
        super().__init__()
        self.attn_norm = RMSNorm(dims.d_model, dims.layer_norm_epsilon)
        self.attn = Attention(dims)
        self.ff_norm = RMSNorm(dims.d_model, dims.layer_norm_epsilon)
        self.ff = FeedForward(dims)
        self.dropout = Dropout(dims.dropout_rate)

    def forward(self, x: Tensor, bias: Tensor) -> Tensor:
        h = self.attn_norm(x)
        q = self.attn.split_heads(self.attn.q(h))
        k, v = self.attn.project_kv(h)
        x = x + self.dropout(self.attn.attend(q, k, v, bias))
        return x + self.dropout(self.ff(self.ff_norm(x)))


class Encoder(nn.Module):
    """Embeddings in, contextual states out; one relative bias (bidirectional) shared by all layers."""

    def __init__(self, dims: T5Dims):
        super().__init__()
        self.relative_bias = RelativeBias(dims, bidirectional=True)
        self.layers = nn.ModuleList(EncoderLayer(dims) for _ in range(dims.num_layers))
        self.final_norm = RMSNorm(dims.d_model, dims.layer_norm_epsilon)
        self.dropout = Dropout(dims.dropout_rate)
        self.gradient_checkpointing = False

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """`x [P, S, d]`, `mask [P, S]` bool (True = real position) -> states `[P, S, d]`."""
        pos = torch.arange(x.shape[1], device=x.device)
        allowed = mask[:, None, None, :]  # [P, 1, 1, S]: masked keys are never attended to
        dtype = torch.get_autocast_dtype(x.device.type) if torch.is_autocast_enabled(x.device.type) else x.dtype
        bias = key_mask_bias(self.relative_bias(pos, pos), allowed, dtype)
        x = self.dropout(x)
        recompute = self.gradient_checkpointing and self.training and torch.is_grad_enabled()
        for layer in self.layers:
            x = checkpoint(layer, x, bias, use_reentrant=False) if recompute else layer(x, bias)
        return self.dropout(self.final_norm(x))


class DecoderLayer(nn.Module):
    """Pre-norm causal self-attention (cached), cross-attention over the memory, feed-forward."""

    def __init__(self, dims: T5Dims):
        super().__init__()
        self.self_norm = RMSNorm(dims.d_model, dims.layer_norm_epsilon)
        self.self_attn = Attention(dims)
        self.cross_norm = RMSNorm(dims.d_model, dims.layer_norm_epsilon)
        self.cross_attn = Attention(dims)
        self.ff_norm = RMSNorm(dims.d_model, dims.layer_norm_epsilon)
        self.ff = FeedForward(dims)
        self.dropout = Dropout(dims.dropout_rate)

    def forward(self, x: Tensor, self_bias: Tensor, past: tuple[Tensor, Tensor] | None,
                cross: tuple[Tensor, Tensor] | Tensor, cross_bias: Tensor) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """`x [B, G, T, d]`; `past` (k, v) `[B*G, H, t, d_kv]` or None; `cross` (k, v) `[B, H, M, d_kv]`
        or the memory `[B, M, d]`."""
        B, G, T, d = x.shape
        # 1. causal self-attention over the cached and the new positions, one row per hypothesis
        h = self.self_norm(x).reshape(B * G, T, d)
        q = self.self_attn.split_heads(self.self_attn.q(h))
        k, v = self.self_attn.project_kv(h)
        if past is not None:
            k, v = torch.cat([past[0].to(k.dtype), k], dim=2), torch.cat([past[1].to(v.dtype), v], dim=2)
        x = x + self.dropout(self.self_attn.attend(q, k, v, self_bias)).view(B, G, T, d)
        # 2. cross-attention: the G*T queries of memory row b share its keys/values (no copy per beam)
        h = self.cross_norm(x).reshape(B, G * T, d)
        q = self.cross_attn.split_heads(self.cross_attn.q(h))  # [B, H, G*T, d_kv]
        if isinstance(cross, Tensor):
            out = self.cross_attn.attend_memory(q, cross, cross_bias)
        else:
            out = self.cross_attn.attend(q, cross[0], cross[1], cross_bias)
        x = x + self.dropout(out).view(B, G, T, d)
        # 3. feed-forward
        return x + self.dropout(self.ff(self.ff_norm(x))), (k, v)


class Decoder(nn.Module):
    """Target embeddings in, states out; one relative bias (causal) shared by all layers, no bias on cross-attention."""

    def __init__(self, dims: T5Dims):
        super().__init__()
        self.relative_bias = RelativeBias(dims, bidirectional=False)
        self.layers = nn.ModuleList(DecoderLayer(dims) for _ in range(dims.num_decoder_layers))
        self.final_norm = RMSNorm(dims.d_model, dims.layer_norm_epsilon)
        self.dropout = Dropout(dims.dropout_rate)
        self.gradient_checkpointing = False

    def forward(self, x: Tensor, cross: Cross, memory_mask: Tensor, cache: Cache | None,
                start: int) -> tuple[Tensor, Cache]:
        T = x.shape[2]
        device = x.device
        dtype = torch.get_autocast_dtype(device.type) if torch.is_autocast_enabled(device.type) else x.dtype
        if isinstance(cross, Tensor):  # the memory: cast once for every layer
            cross = cross.to(dtype)
        query_pos = torch.arange(start, start + T, device=device)
        key_pos = torch.arange(start + T, device=device)
        causal = key_pos[None, :] <= query_pos[:, None]  # [T, start+T]
        self_bias = key_mask_bias(self.relative_bias(query_pos, key_pos), causal, dtype)
        cross_bias = key_mask_bias(torch.zeros((), device=device), memory_mask[:, None, None, :], dtype)
        x = self.dropout(x)
        recompute = self.gradient_checkpointing and self.training and torch.is_grad_enabled()
        new_cache: Cache = []
        for i, layer in enumerate(self.layers):
            args = (x, self_bias, cache[i] if cache is not None else None,
                    cross if isinstance(cross, Tensor) else cross[i], cross_bias)
            x, kv = checkpoint(layer, *args, use_reentrant=False) if recompute else layer(*args)
            new_cache.append(kv)
        return self.dropout(self.final_norm(x)), new_cache


# ----------------------------------------------------------------------------------------------
# The model
# ----------------------------------------------------------------------------------------------


def reorder_cache(cache: Cache, index: Tensor) -> Cache:
    """Select/reorder the hypothesis rows (`B*G`) of a self-attention cache, e.g. after a beam step.

    The one reorder of gramc's cache format (a list per decoder layer of `(k, v)`, rows first):
    the beam search (`gramc.eval.beam`) uses it too."""
    return [(k.index_select(0, index), v.index_select(0, index)) for k, v in cache]


def shift_right(labels: Tensor, start_token: int = PAD_ID, pad_token: int = PAD_ID) -> Tensor:
    """Teacher-forcing decoder input: `[start, labels[:-1]]`, with IGNORE_INDEX (label padding) replaced by pad."""
    dec = labels.new_full(labels.shape, start_token)
    dec[..., 1:] = labels[..., :-1]
    return dec.masked_fill(dec == IGNORE_INDEX, pad_token)


class T5(nn.Module):
    """T5 encoder-decoder with a soft-prefix encoder input and beam-shared cross-attention keys/values.

    Public API: `encode`, `cross_kv`, `decode` (+ module-level `reorder_cache`), `forward`
    (single-passage seq2seq logits), `logits`; weights: `from_pretrained`, `from_hf_model`,
    `load_hf_state_dict`, `hf_state_dict`, `to_hf_model`; training: `set_dropout`,
    `set_gradient_checkpointing`.
    """

    def __init__(self, dims: T5Dims):
        super().__init__()
        self.dims = dims
        self.shared = nn.Embedding(dims.vocab_size, dims.d_model)
        self.encoder = Encoder(dims)
        self.decoder = Decoder(dims)
        self.lm_head = None if dims.tie_word_embeddings else nn.Linear(dims.d_model, dims.vocab_size, bias=False)
        self.apply(self._init_weights)

    def set_dropout(self, p: float) -> None:
        """Change every dropout rate (embeddings, attention weights, residual branches, feed-forward) to `p`."""
        if not 0.0 <= p < 1.0:
            raise ValueError(f"T5.set_dropout: expected a rate in [0, 1), got {p!r}")
        self.dims.dropout_rate = p
        for module in self.modules():
            if isinstance(module, nn.Dropout):
                module.p = p

    def set_gradient_checkpointing(self, enabled: bool = True) -> None:
        """Recompute each layer's activations in the backward pass (less memory, ~30% more compute) when training."""
        self.encoder.gradient_checkpointing = self.decoder.gradient_checkpointing = enabled

    def _init_weights(self, module: nn.Module) -> None:
        """T5's (Mesh TensorFlow) initialisation, so models trained from scratch start like HF's."""
        d = self.dims
        if isinstance(module, RMSNorm):
            nn.init.ones_(module.weight)
        elif module is self.shared:
            nn.init.normal_(module.weight, std=1.0)
        elif isinstance(module, RelativeBias):
            nn.init.normal_(module.embedding.weight, std=d.d_model ** -0.5)
        elif isinstance(module, Attention):
            nn.init.normal_(module.q.weight, std=(d.d_model * d.d_kv) ** -0.5)
            nn.init.normal_(module.k.weight, std=d.d_model ** -0.5)
            nn.init.normal_(module.v.weight, std=d.d_model ** -0.5)
            nn.init.normal_(module.o.weight, std=d.inner_dim ** -0.5)
        elif isinstance(module, FeedForward):
            for name in ("wi", "wi_0", "wi_1"):
                if hasattr(module, name):
                    nn.init.normal_(getattr(module, name).weight, std=d.d_model ** -0.5)
            nn.init.normal_(module.wo.weight, std=d.d_ff ** -0.5)
        elif module is self.lm_head:
            nn.init.normal_(module.weight, std=1.0)

    # -- encoder ---------------------------------------------------------------------------------

    def encode(self, input_ids: Tensor, mask: Tensor, prefix: Tensor | None = None,
               prefix_mask: Tensor | None = None) -> Tensor:
        """Token ids `[P, L]` + mask `[P, L]` (+ soft prefix `[P, K, d]`, mask `[P, K]`) -> states `[P, K+L, d]`.

        The prefix is prepended to the token embeddings, so outputs `[:, :K]` are prefix positions;
        build the matching memory mask with `torch.cat([prefix_mask, mask], 1)`. Without `prefix_mask`
        every prefix position counts as real. Masked positions never influence unmasked outputs.
        """
        if input_ids.dim() != 2 or mask.shape != input_ids.shape:
            raise ValueError(f"T5.encode: expected input_ids and mask of the same shape [P, L], got "
                             f"{tuple(input_ids.shape)} and {tuple(mask.shape)}")
        x = self.shared(input_ids)
        mask = mask.bool()
        if prefix is not None:
            P, K = input_ids.shape[0], prefix.shape[1] if prefix.dim() == 3 else -1
            if prefix.shape != (P, K, self.dims.d_model):
                raise ValueError(f"T5.encode: expected prefix of shape [P={P}, K, d_model={self.dims.d_model}], "
                                 f"got {tuple(prefix.shape)}")
            if prefix_mask is None:
                prefix_mask = torch.ones(P, K, dtype=torch.bool, device=mask.device)
            elif prefix_mask.shape != (P, K):
                raise ValueError(f"T5.encode: expected prefix_mask of shape [{P}, {K}], got {tuple(prefix_mask.shape)}")
            x = torch.cat([prefix.to(x.dtype), x], dim=1)
            mask = torch.cat([prefix_mask.bool(), mask], dim=1)
        elif prefix_mask is not None:
            raise ValueError("T5.encode: prefix_mask given without prefix")
        return self.encoder(x, mask)

    # -- decoder ---------------------------------------------------------------------------------

    def cross_kv(self, memory: Tensor) -> CrossKV:
        """Cross-attention keys and values of every decoder layer for memory `[B, M, d]`: `[(k, v)]`, each `[B, H, M, d_kv]`.

        Compute once per memory row and reuse for every decoding step and every hypothesis of that row.
        """
        return [layer.cross_attn.project_kv(memory) for layer in self.decoder.layers]

    def decode(self, dec_ids: Tensor, cross: Cross, memory_mask: Tensor, cache: Cache | None = None,
               start: int = 0) -> tuple[Tensor, Cache]:
        """Decoder ids `[B, G, T]` -> (logits `[B, G, T, V]`, cache): `logits(decode_states(...))`."""
        hidden, new_cache = self.decode_states(dec_ids, cross, memory_mask, cache, start)
        return self.logits(hidden), new_cache

    def decode_states(self, dec_ids: Tensor, cross: Cross, memory_mask: Tensor, cache: Cache | None = None,
                      start: int = 0) -> tuple[Tensor, Cache]:
        """Decoder ids `[B, G, T]` (G hypotheses per memory row) -> (final states `[B, G, T, d]`, cache).

        `cross`: `cross_kv(memory)` (`B` rows), for many calls over one memory, or the memory
        `[B, M, d]` itself, for one pass (see `Cross`; both give the same states). `memory_mask [B, M]`
        bool. `cache` is None or the cache returned by the previous call, holding `start` positions;
        the returned cache holds `start + T`. Cache rows are `B*G` (row `b*G + g`) and can be
        reordered between calls with `reorder_cache(cache, idx)` (`index_select(0, idx)` on every
        tensor); `G` may change between calls as long as the cache rows match `B*G`.
        """
        if dec_ids.dim() != 3:
            raise ValueError(f"T5.decode: expected dec_ids [B, G, T], got shape {tuple(dec_ids.shape)}")
        B, G, T = dec_ids.shape
        rows, positions = (cross.shape[0], cross.shape[1]) if isinstance(cross, Tensor) else \
            (cross[0][0].shape[0], cross[0][0].shape[2])
        if memory_mask.dim() != 2 or memory_mask.shape[0] != B or rows != B:
            raise ValueError(f"T5.decode: memory_mask {tuple(memory_mask.shape)} and the cross-attention "
                             f"memory's {rows} rows must both have B={B} rows")
        if memory_mask.shape[1] != positions:
            raise ValueError(f"T5.decode: memory_mask has {memory_mask.shape[1]} positions, the cross-attention "
                             f"memory has {positions}")
        if cache is not None and (cache[0][0].shape[0] != B * G or cache[0][0].shape[2] != start):
            raise ValueError(f"T5.decode: cache holds {cache[0][0].shape[0]} rows x {cache[0][0].shape[2]} "
                             f"positions, expected B*G={B * G} rows x start={start} positions")
        if cache is None and start != 0:
            raise ValueError(f"T5.decode: start={start} but no cache was given")
        return self.decoder(self.shared(dec_ids), cross, memory_mask.bool(), cache, start)

    def logits(self, hidden: Tensor) -> Tensor:
        """Decoder states -> vocabulary logits (tied: `hidden * d_model**-0.5 @ shared.T`; untied: `lm_head`)."""
        weight, scale = self.head()
        return F.linear(hidden * scale if scale != 1.0 else hidden, weight)

    def head(self) -> tuple[Tensor, float]:
        """The LM head as `(weight [V, d], scale)`: logits = `(hidden * scale) @ weight.T` (T5 has no bias).

        Tied: the shared embedding and `d_model**-0.5`; untied: `lm_head.weight` and 1. Lets a caller
        compute the logits of chosen tokens only (`gramc.model.softmax`).
        """
        if self.lm_head is None:
            return self.shared.weight, self.dims.d_model ** -0.5
        return self.lm_head.weight, 1.0

    def forward(self, input_ids: Tensor, mask: Tensor, labels: Tensor) -> Tensor:
        """Single-passage seq2seq: logits `[P, T, V]` for `labels [P, T]` (teacher forcing, start token 0)."""
        memory = self.encode(input_ids, mask)
        logits, _ = self.decode(shift_right(labels)[:, None, :], memory, mask)
        return logits[:, 0]

    # -- Hugging Face weights --------------------------------------------------------------------

    def _hf_names(self) -> dict[str, str]:
        """Our parameter name -> Hugging Face `T5ForConditionalGeneration` parameter name."""
        names = {"shared.weight": "shared.weight",
                 "encoder.relative_bias.embedding.weight":
                     "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
                 "decoder.relative_bias.embedding.weight":
                     "decoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
                 "encoder.final_norm.weight": "encoder.final_layer_norm.weight",
                 "decoder.final_norm.weight": "decoder.final_layer_norm.weight"}
        if self.lm_head is not None:
            names["lm_head.weight"] = "lm_head.weight"
        ff = ("wi_0", "wi_1", "wo") if self.dims.feed_forward_proj == "gated-gelu" else ("wi", "wo")
        for i in range(self.dims.num_layers):
            ours, hf = f"encoder.layers.{i}", f"encoder.block.{i}.layer"
            names[f"{ours}.attn_norm.weight"] = f"{hf}.0.layer_norm.weight"
            names.update({f"{ours}.attn.{p}.weight": f"{hf}.0.SelfAttention.{p}.weight" for p in "qkvo"})
            names[f"{ours}.ff_norm.weight"] = f"{hf}.1.layer_norm.weight"
            names.update({f"{ours}.ff.{p}.weight": f"{hf}.1.DenseReluDense.{p}.weight" for p in ff})
        for i in range(self.dims.num_decoder_layers):
            ours, hf = f"decoder.layers.{i}", f"decoder.block.{i}.layer"
            names[f"{ours}.self_norm.weight"] = f"{hf}.0.layer_norm.weight"
            names.update({f"{ours}.self_attn.{p}.weight": f"{hf}.0.SelfAttention.{p}.weight" for p in "qkvo"})
            names[f"{ours}.cross_norm.weight"] = f"{hf}.1.layer_norm.weight"
            names.update({f"{ours}.cross_attn.{p}.weight": f"{hf}.1.EncDecAttention.{p}.weight" for p in "qkvo"})
            names[f"{ours}.ff_norm.weight"] = f"{hf}.2.layer_norm.weight"
            names.update({f"{ours}.ff.{p}.weight": f"{hf}.2.DenseReluDense.{p}.weight" for p in ff})
        return names

    # keys a HF checkpoint may hold that we do not need (aliases of `shared`, an unused bias)
    _HF_IGNORED = ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight",
                   "decoder.block.0.layer.1.EncDecAttention.relative_attention_bias.weight")

    def load_hf_state_dict(self, state_dict: dict[str, Tensor]) -> None:
        """Copy weights from a Hugging Face T5 state dict (names as in `T5ForConditionalGeneration`)."""
        names = self._hf_names()
        missing = [hf for hf in names.values() if hf not in state_dict]
        if self.lm_head is not None and "lm_head.weight" in missing:
            raise KeyError("T5.load_hf_state_dict: untied model (tie_word_embeddings=False) but the state dict "
                           "has no 'lm_head.weight'")
        if missing:
            raise KeyError(f"T5.load_hf_state_dict: state dict lacks {len(missing)} T5 weights, e.g. {missing[:3]} "
                           f"(expected {self.dims.num_layers}+{self.dims.num_decoder_layers} layers, "
                           f"feed_forward_proj={self.dims.feed_forward_proj!r})")
        known = set(names.values()) | set(self._HF_IGNORED) | {"lm_head.weight"}
        unexpected = sorted(k for k in state_dict if k not in known)
        if unexpected:
            raise KeyError(f"T5.load_hf_state_dict: unexpected weights {unexpected[:3]} (is this a T5 encoder-decoder "
                           f"with feed_forward_proj={self.dims.feed_forward_proj!r}?)")
        params = dict(self.named_parameters())
        with torch.no_grad():
            for ours, hf in names.items():
                src = state_dict[hf]
                if src.shape != params[ours].shape:
                    raise ValueError(f"T5.load_hf_state_dict: {hf} has shape {tuple(src.shape)}, "
                                     f"expected {tuple(params[ours].shape)}")
                params[ours].copy_(src)

    def hf_state_dict(self) -> dict[str, Tensor]:
        """Our weights under Hugging Face names (detached; embeddings/LM head aliases included)."""
        params = dict(self.named_parameters())
        sd = {hf: params[ours].detach() for ours, hf in self._hf_names().items()}
        sd["encoder.embed_tokens.weight"] = sd["decoder.embed_tokens.weight"] = sd["shared.weight"]
        if self.lm_head is None:
            sd["lm_head.weight"] = sd["shared.weight"]
        return sd

    def to_hf_model(self):
        """A `transformers.T5ForConditionalGeneration` with identical weights (eval mode, same device/dtype)."""
        from transformers import T5ForConditionalGeneration

        hf = T5ForConditionalGeneration(self.dims.to_hf_config())
        if self.lm_head is not None:  # transformers 5.x ties at construction even for untied configs: untie
            hf.lm_head.weight = nn.Parameter(torch.empty_like(hf.lm_head.weight))
        weight = self.shared.weight
        hf.to(device=weight.device, dtype=weight.dtype)
        hf.load_state_dict(self.hf_state_dict(), strict=True)
        return hf.eval()

    @classmethod
    def from_hf_model(cls, hf) -> "T5":
        """Our T5 with the weights of a `transformers.T5ForConditionalGeneration` (same dtype and device)."""
        model = cls(T5Dims.from_hf_config(hf.config))
        weight = hf.shared.weight
        model.to(device=weight.device, dtype=weight.dtype)
        model.load_hf_state_dict(hf.state_dict())
        return model

    @classmethod
    def from_pretrained(cls, name_or_folder: str) -> "T5":
        """Load Hugging Face T5 weights from a local folder or a hub name (e.g. `t5-small`, `google/flan-t5-small`)."""
        from transformers import T5ForConditionalGeneration

        try:
            hf = T5ForConditionalGeneration.from_pretrained(name_or_folder)
        except OSError as err:
            raise OSError(f"T5.from_pretrained: cannot load T5 weights from {name_or_folder!r} (a folder with "
                          f"config.json + model.safetensors, or a hub name): {err}") from err
        return cls.from_hf_model(hf)
