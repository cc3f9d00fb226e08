"""The LEARN preference-alignment model (PAL): adaptor -> causal post-LN BERT encoder -> projection -> L2 norm.

One tower reads a user's history (causal, right-padded) and gives an embedding at every position; by default the
same module encodes each catalogue item as a length-1 sequence (the authors' "shared" item tower). ``ModelConfig``
is the ``model:`` section of a run config; reading and writing weights is learn.checkpoint's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint as activation_checkpoint

from learn.choices import check_choices
from learn.errors import LearnError


@dataclass
class ModelConfig:
    input_dim: int = 384  # d_llm (4096 for Baichuan2-7B; 384 for MiniLM)
    hidden_size: int = 768
    num_layers: int = 4
    num_heads: int = 12
    ffn_size: int = 3072
    dropout: float = 0.1  # hidden and attention-probs dropout, as bert-base
    output_dim: int = 768  # projection size (paper's Amazon launcher: 4096)
    max_len: int = 40  # max history length (for learned positions)
    position: Literal["none", "learned"] = "none"  # none: the paper's code
    # shared: the user tower reads each item as a length-1 sequence (paper) | separate: own adaptor, encoder, projection
    # | table: an item is the user tower's input vector of it (adaptor(text) [+ ID vector]), L2-normalised: SASRec's
    # tied item table; needs output_dim == hidden_size
    item_tower: Literal["shared", "separate", "table"] = "shared"
    # LayerNorm + dropout on the first hidden states of a history (input + position), as SASRec and BERT's embeddings
    embed_norm: bool = False
    item_id_embedding: bool = False  # text+ID variant: learnable item-ID embedding added to the adaptor output
    # false: no text input at all (no adaptor); with item_id_embedding the towers are a SASRec-style ID model, the
    # in-trainer ID reference (item text vectors are loaded but unused)
    text_input: bool = True
    # learnable per-item score offset b_i (ID variant; popularity): score(u, i) = scale * (cos(u, i) + b_i), carried
    # as one extra output coordinate (users 1, items b_i) so every loss and the ranking stay plain dot products
    item_bias: bool = False
    num_items: int = 0  # catalogue size, required when item_id_embedding or item_bias
    layer_norm_eps: float = 1e-12

    def validate(self) -> None:
        """Raise LearnError on an inconsistent config (one line, naming the field)."""
        check_choices(self, "model.")  # a ModelConfig read from a checkpoint's config.yaml, not through load_config
        checks = [
            (self.num_heads > 0 and self.hidden_size % self.num_heads == 0,
             f"model.hidden_size {self.hidden_size} is not divisible by model.num_heads {self.num_heads}"),
            (min(self.input_dim, self.hidden_size, self.ffn_size, self.output_dim) > 0, "model sizes must be > 0"),
            (self.num_layers >= 0, "model.num_layers must be >= 0"),
            (0.0 <= self.dropout < 1.0, "model.dropout must be in [0, 1)"),
            (not self.item_id_embedding or self.num_items > 0, "model.item_id_embedding needs model.num_items > 0"),
            (not self.item_bias or self.num_items > 0, "model.item_bias needs model.num_items > 0"),
            (self.text_input or self.item_id_embedding,
             "model.text_input=false needs model.item_id_embedding=true (the towers need some item input)"),
            (self.position != "learned" or self.max_len > 0, "model.position=learned needs model.max_len > 0"),
            (self.item_tower != "table" or self.output_dim == self.hidden_size,
             "model.item_tower=table needs model.output_dim == model.hidden_size (items are input vectors)"),
        ]
        for ok, msg in checks:
            if not ok:
                raise LearnError(msg)

    @property
    def uses_item_ids(self) -> bool:
        """Whether the towers need catalogue item ids besides the item vectors."""
        return self.item_id_embedding or self.item_bias

    @property
    def embedding_dim(self) -> int:
        """Size of the user/item embeddings the model outputs (``output_dim``, +1 with ``item_bias``)."""
        return self.output_dim + int(self.item_bias)


class BertLayer(nn.Module):
    """One post-LN BERT layer (same maths as transformers' BertLayer) with a fused q/k/v projection and SDPA."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        h = cfg.hidden_size
        self.num_heads = cfg.num_heads
        self.head_dim = h // cfg.num_heads
        self.p = cfg.dropout
        self.qkv = nn.Linear(h, 3 * h)  # rows = [query; key; value], each [h, h]
        self.attn_out = nn.Linear(h, h)
        self.attn_norm = nn.LayerNorm(h, eps=cfg.layer_norm_eps)
        self.ffn_in = nn.Linear(h, cfg.ffn_size)
        self.ffn_out = nn.Linear(cfg.ffn_size, h)
        self.ffn_norm = nn.LayerNorm(h, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: Tensor, attn_mask: Tensor | None) -> Tensor:
        """x [B,L,h]; attn_mask [B,1,L,L] bool (True = may attend) or None when L == 1.

        (A read-out of one position per row goes through :meth:`forward_packed`, which computes only that query.)
        """
        b, n, h = x.shape
        p = self.p if self.training else 0.0
        if n == 1:
            # softmax over a single key is 1: the context is the value projection (q and k are never needed)
            v = F.linear(x, self.qkv.weight[2 * h:], self.qkv.bias[2 * h:])
            if p > 0:  # attention-probs dropout on the single probability, per head
                keep = F.dropout(v.new_ones(b, 1, self.num_heads, 1), p, training=True)
                v = (v.view(b, 1, self.num_heads, self.head_dim) * keep).view(b, 1, h)
            ctx = v
        else:
            q, k, v = self.qkv(x).view(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
            ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=p)
            ctx = ctx.transpose(1, 2).reshape(b, n, h)
        x = self.attn_norm(x + self.dropout(self.attn_out(ctx)))
        return self.ffn_norm(x + self.dropout(self.ffn_out(F.gelu(self.ffn_in(x)))))

    def forward_packed(self, x: Tensor, flat: Tensor, shape: tuple[int, int], attn_mask: Tensor | None,
                       query: tuple[Tensor, Tensor, Tensor, Tensor] | None = None) -> Tensor:
        """The same layer on packed tokens: x [T,h] holds only the computed positions ``flat`` (indices into B*L).

        Every per-token op (q/k/v, output dense, FFN, LayerNorms, dropout) runs on the T packed rows only; attention
        scatters k/v (and q) to the padded [B,H,L,d] layout, where positions outside ``flat`` are zero and never
        attended by a computed query. ``attn_mask`` is [B,1,L,L] bool, or None for a plain causal mask.

        ``query = (batch row, position, packed row, [Q,L] mask)``: compute only those Q queries (the readout of
        the last layer) and return [Q,h] in that order; keys/values still use every packed row.
        """
        b, n = shape
        h = x.shape[1]
        heads, d = self.num_heads, self.head_dim
        p = self.p if self.training else 0.0
        w, bias = self.qkv.weight, self.qkv.bias
        if query is None:
            packed = self.qkv(x)
            qkv = packed.new_zeros(b * n, 3 * h).index_copy(0, flat, packed)
            q, k, v = qkv.view(b, n, 3, heads, d).permute(2, 0, 3, 1, 4).unbind(0)
            ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=p,
                                                 is_causal=attn_mask is None)
            ctx = ctx.transpose(1, 2).reshape(b * n, h).index_select(0, flat)
        else:
            qb, qp, rows, qmask = query
            packed = F.linear(x, w[h:], bias[h:])
            kv = packed.new_zeros(b * n, 2 * h).index_copy(0, flat, packed)
            k, v = kv.view(b, n, 2, heads, d).permute(2, 0, 3, 1, 4).unbind(0)
            x = x.index_select(0, rows)  # residual stream at the query rows
            q = F.linear(x, w[:h], bias[:h]).view(-1, heads, 1, d)
            ctx = F.scaled_dot_product_attention(q, k[qb], v[qb], attn_mask=qmask[:, None, None, :], dropout_p=p)
            ctx = ctx.reshape(-1, h)
        x = self.attn_norm(x + self.dropout(self.attn_out(ctx)))
        return self.ffn_norm(x + self.dropout(self.ffn_out(F.gelu(self.ffn_in(x)))))


class Tower(nn.Module):
    """adaptor Linear [+ extra input, e.g. item-ID embedding] [+ learned positions] -> BERT layers -> projection."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.adaptor = nn.Linear(cfg.input_dim, cfg.hidden_size) if cfg.text_input else None
        self.position = nn.Embedding(cfg.max_len, cfg.hidden_size) if cfg.position == "learned" else None
        self.embed_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps) if cfg.embed_norm else None
        self.embed_dropout = nn.Dropout(cfg.dropout)
        self.layers = nn.ModuleList(BertLayer(cfg) for _ in range(cfg.num_layers))
        self.proj = nn.Linear(cfg.hidden_size, cfg.output_dim)

    def forward(self, x: Tensor, mask: Tensor | None, extra: Tensor | None = None,
                readout: Tensor | None = None, select: Tensor | None = None) -> Tensor:
        """x [B,L,D], mask [B,L] bool -> [B,L,out] L2-normalised (at least float32), or [B,1,out] at ``readout``.

        ``select`` [B,L] bool returns only ``forward(x, mask, extra)[select]`` ([M,out]); with ``select`` or
        ``readout`` the positions that are neither real nor wanted are never computed (see :meth:`_packed`).
        """
        b, n, _ = x.shape
        if self.adaptor is not None and x.dtype != self.adaptor.weight.dtype and not torch.is_autocast_enabled(
                x.device.type):
            x = x.to(self.adaptor.weight.dtype)
        if mask is not None and n > 1 and (readout is not None or select is not None):
            if select is None:
                select = torch.zeros(b, n, dtype=torch.bool, device=x.device)
                select[torch.arange(b, device=x.device), readout] = True
                return self._packed(x, mask, extra, select).unsqueeze(1)
            return self._packed(x, mask, extra, select)
        h = self._embed(self._input(x, extra), n, lambda: self.position.weight[:n])
        attn_mask = None
        if n > 1:
            idx = torch.arange(n, device=x.device)
            causal = idx[None, :] <= idx[:, None]  # [L(query), L(key)]
            key_ok = mask[:, None, :] if mask is not None else torch.ones(b, 1, n, dtype=torch.bool, device=x.device)
            # every query may attend to itself: a padded row is never fully masked (no NaN) and, because real
            # positions never attend to padded keys, padded positions cannot change any real position's output
            attn_mask = ((causal[None] & key_ok) | torch.eye(n, dtype=torch.bool, device=x.device)).unsqueeze(1)
        for layer in self.layers:
            h = layer(h, attn_mask)
        if readout is not None:  # only without a mask or for L == 1: the masked read-out is packed (above)
            h = h[torch.arange(b, device=x.device), readout].unsqueeze(1)
        return self._project(h)

    def _embed(self, h: Tensor, n: int, positions) -> Tensor:
        """The first hidden states of a length-``n`` history: + learned positions, then ``embed_norm``."""
        if self.position is not None:
            if n > self.position.num_embeddings:
                raise LearnError(f"sequence length {n} exceeds model.max_len {self.position.num_embeddings}")
            h = h + positions()
        if self.embed_norm is not None:
            h = self.embed_dropout(self.embed_norm(h))
        return h

    def _input(self, x: Tensor, extra: Tensor | None) -> Tensor:
        """The first hidden states: adaptor(x) [+ extra]; only ``extra`` (the ID vectors) without text input."""
        if self.adaptor is None:
            return extra
        h = self.adaptor(x)
        return h if extra is None else h + extra

    def _project(self, h: Tensor) -> Tensor:
        out = self.proj(h)
        return F.normalize(out.float() if out.dtype in (torch.float16, torch.bfloat16) else out, dim=-1)

    def _packed(self, x: Tensor, mask: Tensor, extra: Tensor | None, select: Tensor) -> Tensor:
        """``forward(x, mask, extra)[select]`` computing only the positions in ``mask | select`` (packed).

        Real positions never attend to other positions outside ``mask``, and a position outside ``mask`` attends
        only to real keys and itself, so dropping every other position from the per-token maths changes no output
        that is read: with right-padded short histories most of a padded batch is skipped. When every row has at
        most one selected position (a readout, or the paper's single loss position) the last layer computes only
        those queries. When ``mask | select`` is a prefix of every row (right padding) attention uses the fused
        causal kernel instead of an explicit [B,1,L,L] mask.
        """
        b, n, _ = x.shape
        dev = x.device
        keep = mask | select
        flat = keep.flatten().nonzero().squeeze(1)  # [T] computed positions, row-major
        h = self._input(x.flatten(0, 1).index_select(0, flat),
                        extra.flatten(0, 1).index_select(0, flat) if extra is not None else None)
        h = self._embed(h, n, lambda: self.position(flat % n))
        idx = torch.arange(n, device=dev)
        n_real, n_keep = mask.sum(1), keep.sum(1)
        # the plain causal mask is exact when the real items are a prefix and at most one computed position follows
        real_prefix = (mask == (idx[None, :] < n_real[:, None])).all()
        keep_prefix = (keep == (idx[None, :] < n_keep[:, None])).all()
        prefix = bool(real_prefix & keep_prefix & (n_keep <= n_real + 1).all())
        attn_mask = None
        if not prefix:
            causal = idx[None, :] <= idx[:, None]
            attn_mask = ((causal[None] & mask[:, None, :]) | torch.eye(n, dtype=torch.bool, device=dev)).unsqueeze(1)
        sel_rows = select.flatten().index_select(0, flat).nonzero().squeeze(1)  # packed rows of the outputs
        query = None
        if self.layers and int(select.sum(1).max()) <= 1:
            qb, qp = select.nonzero(as_tuple=True)
            qmask = ((idx[None, :] <= qp[:, None]) & mask[qb]) | (idx[None, :] == qp[:, None])  # [Q,L]
            query = (qb, qp, sel_rows, qmask)
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            h = layer.forward_packed(h, flat, (b, n), attn_mask, query if i == last else None)
        if query is None:
            h = h.index_select(0, sel_rows)
        return self._project(h)


class LEARNModel(nn.Module):
    """User tower over histories + item tower over single items; outputs are L2-normalised, float32 under autocast
    (with ``item_bias``, plus one coordinate: 1 for users, the item's b_i for items)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.tower = Tower(cfg)  # the user tower (and the item tower when cfg.item_tower == "shared")
        self.item_tower = Tower(cfg) if cfg.item_tower == "separate" else None
        # one ID table for both towers: an item's ID vector is a property of the item, not of the tower
        self.id_embedding = nn.Embedding(cfg.num_items, cfg.hidden_size) if cfg.item_id_embedding else None
        self.apply(self._init_weights)
        self.item_bias = nn.Parameter(torch.zeros(cfg.num_items)) if cfg.item_bias else None

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        """BERT-style init: normal(0, 0.02) weights, zero biases, LayerNorm weight 1."""
        if isinstance(m, nn.Linear | nn.Embedding):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    def _id_vectors(self, item_ids: Tensor | None, mask: Tensor | None) -> Tensor | None:
        if self.id_embedding is None:
            return None
        if item_ids is None:
            raise LearnError("model.item_id_embedding is on: item_ids are required")
        if mask is not None:
            item_ids = torch.where(mask, item_ids, torch.zeros_like(item_ids))  # padding ids may be anything
        return self.id_embedding(item_ids)

    def _users_out(self, out: Tensor) -> Tensor:
        """User embeddings as returned: with ``item_bias`` a constant 1 is appended (it multiplies the item's b_i)."""
        if self.item_bias is None:
            return out
        return torch.cat([out, out.new_ones(*out.shape[:-1], 1)], dim=-1)

    def _items_out(self, out: Tensor, item_ids: Tensor | None) -> Tensor:
        """Item embeddings as returned: with ``item_bias`` the item's b_i is appended."""
        if self.item_bias is None:
            return out
        if item_ids is None:
            raise LearnError("model.item_bias is on: item_ids are required")
        return torch.cat([out, self.item_bias[item_ids].to(out.dtype).unsqueeze(-1)], dim=-1)

    def encode_sequence(self, x: Tensor, mask: Tensor, item_ids: Tensor | None = None) -> Tensor:
        """x [B,L,input_dim] (right-padded), mask [B,L] bool (True = real item) -> [B,L,embedding_dim]."""
        return self._users_out(self.tower(x, mask, self._id_vectors(item_ids, mask)))

    def encode_users(self, x: Tensor, mask: Tensor, item_ids: Tensor | None = None) -> Tensor:
        """[B,embedding_dim]: the output at the last non-padding position (index ``mask.sum(1) - 1``, 0 if empty)."""
        readout = (mask.sum(1) - 1).clamp(min=0)
        return self._users_out(self.tower(x, mask, self._id_vectors(item_ids, mask), readout=readout).squeeze(1))

    def encode_positions(self, x: Tensor, mask: Tensor, select: Tensor, item_ids: Tensor | None = None) -> Tensor:
        """[M,embedding_dim] = ``encode_sequence(x, mask, item_ids)[select]`` (row-major), computing only what is read.

        Positions that are neither real (``mask``) nor selected are skipped in every per-token op, and with at most
        one selected position per row the last layer computes only those queries (the training losses read one
        position per history with ``loss_positions=target``, every real position with ``all``).
        """
        return self._users_out(self.tower(x, mask, self._id_vectors(item_ids, mask), select=select))

    def encode_items(self, x: Tensor, item_ids: Tensor | None = None, dropout: bool = True) -> Tensor:
        """x [N,input_dim] -> [N,embedding_dim]; each item is a length-1 sequence through the item tower.

        ``dropout=False`` encodes without dropout even in training mode (gradients still flow): the items a loss
        scores against are then clean, as an ID model's item table is.
        """
        if self.cfg.item_tower == "table":  # no dropout, as SASRec's output item table
            x = x.to(self.tower.adaptor.weight.dtype) if self.tower.adaptor is not None else x
            h = self.tower._input(x, self._id_vectors(item_ids, None))
            return self._items_out(F.normalize(h.float() if h.dtype in (torch.float16, torch.bfloat16) else h, dim=-1),
                                   item_ids)
        tower = self.item_tower if self.item_tower is not None else self.tower
        ids = self._id_vectors(item_ids[:, None] if item_ids is not None else None, None)
        training = tower.training
        if not dropout and training:
            tower.eval()
        try:
            out = tower(x[:, None, :], None, ids).squeeze(1)
        finally:
            tower.train(training)
        return self._items_out(out, item_ids)

    def encode_catalogue(self, x: Tensor, item_ids: Tensor | None = None, chunk_size: int = 8192,
                         checkpoint: bool = True, dropout: bool = True) -> Tensor:
        """Encode the whole catalogue [N,input_dim] in chunks -> [N,embedding_dim].

        With grad enabled and ``checkpoint`` each chunk of a catalogue larger than one chunk is
        activation-checkpointed, so only the chunk inputs and the [N,output_dim] result stay alive for backward
        (finetuning re-encodes the catalogue every step). A catalogue of at most one chunk is not checkpointed: one
        chunk's activations are alive at some point either way, and the recompute would cost another forward pass.
        """
        use_ckpt = (checkpoint and x.shape[0] > chunk_size and torch.is_grad_enabled()
                    and any(p.requires_grad for p in self.parameters()))
        out = []
        for start in range(0, x.shape[0], chunk_size):
            xc = x[start:start + chunk_size]
            ic = item_ids[start:start + chunk_size] if item_ids is not None else None
            if use_ckpt:  # the recompute calls encode_items with the same dropout switch
                out.append(activation_checkpoint(self.encode_items, xc, ic, dropout, use_reentrant=False))
            else:
                out.append(self.encode_items(xc, ic, dropout))
        if not out:
            return x.new_zeros(0, self.cfg.embedding_dim, dtype=torch.float32)
        return torch.cat(out)

    def forward(self, x: Tensor, mask: Tensor, item_ids: Tensor | None = None) -> Tensor:
        return self.encode_sequence(x, mask, item_ids)
