"""Stage 3: the core-class-guided classifier (METHOD.md, stage 3).

Features:
- document encoder: a Hugging Face AutoModel (bundled MiniLM by default), mean or [CLS] pooling;
- class encoder: `gnn_num_layers` GCNConv layers (torch_geometric) over each class's
  ego network (the class, its parents, its children), summed over the ego network's
  nodes; node features start as the encoded class names and are learnt;
- matching p_ij = sigmoid(c_j^T B D_i + b) with a learnable B (and one scalar bias b,
  which lets the model set how rare a positive is; the paper's sigmoid(exp(.)) is not used);
- `classifier.head_init`: `zeroshot` (default) starts the model at the stage-1 bi-encoder
  scores (see TaxoClassifier), `random` is the paper's model with random weights;
- labels: positive = cores and their parents, ignored = their children, negative = the
  rest (`classifier.label_scope=all`: ancestors / descendants);
- BCE summed per document over positive and negative classes, ignored classes masked;
- AdamW with separate learning rates for the encoder and the rest, warm-up then linear
  decay, a validation split of the pseudo-labelled documents, best-epoch weights,
  early stopping, AMP (bf16 autocast; fp16 with GradScaler on CUDA).
"""

from __future__ import annotations

import copy
import math
import random
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from taxoclass.config import ClassifierConfig
from taxoclass.data.taxonomy import ROOT, Taxonomy
from taxoclass.errors import ConfigError

Sink = Callable[..., None]


# ---------------------------------------------------------------- labels
def build_labels(cores: list[list[int]], taxonomy: Taxonomy, scope: str = "paper",
                 negatives: str = "all") -> tuple[np.ndarray, np.ndarray]:
    """(targets, mask), both documents x classes: target 1 = positive, mask 0 = ignored.

    scope: paper = cores + parents positive, children ignored; all = cores + ancestors
    positive, descendants ignored. negatives: all = every other class (paper); core_depth =
    classes deeper than the document's deepest core are ignored too: a document whose
    deepest core is at level 0 says nothing about level 2, and treating all level-2 classes
    as its negatives pushes the leaves down everywhere (docs/quality.md).
    """
    n, c = len(cores), len(taxonomy)
    targets = np.zeros((n, c), dtype=np.float32)
    mask = np.ones((n, c), dtype=np.float32)
    levels = np.asarray(taxonomy.levels)
    for i, core in enumerate(cores):
        positive, ignored = set(core), set()
        for k in core:
            if scope == "all":
                positive |= taxonomy.ancestors(k)
                ignored |= taxonomy.descendants(k)
            else:
                positive |= {p for p in taxonomy.parents(k) if p != ROOT}
                ignored |= set(taxonomy.children(k))
        ignored -= positive
        targets[i, sorted(positive)] = 1.0
        if ignored:
            mask[i, sorted(ignored)] = 0.0
        if negatives == "core_depth" and core:
            mask[i, levels > max(taxonomy.level(k) for k in core)] = 0.0
    return targets, mask


def label_stats(targets: np.ndarray, mask: np.ndarray) -> dict:
    pos = int(targets.sum())
    ignored = int((mask == 0).sum())
    neg = int(mask.sum()) - pos
    return {
        "stage3/num_positive_labels": pos,
        "stage3/num_negative_labels": neg,
        "stage3/num_ignored_labels": ignored,
        "stage3/positive_ratio": pos / max(pos + neg, 1),
    }


# ---------------------------------------------------------------- model
def ego_graph(taxonomy: Taxonomy):
    """Disjoint union of every class's ego network, for one batched GCN pass.

    Returns (node_class, edge_index, node_batch): node i stands for class
    node_class[i] inside ego network node_batch[i]; edges link the centre to its
    parents and children in both directions.
    """
    node_class, node_batch, edges = [], [], []
    for c in range(len(taxonomy)):
        centre = len(node_class)
        node_class.append(c)
        node_batch.append(c)
        for nb in [p for p in taxonomy.parents(c) if p != ROOT] + taxonomy.children(c):
            j = len(node_class)
            node_class.append(nb)
            node_batch.append(c)
            edges += [(centre, j), (j, centre)]
    edge_index = torch.tensor(edges, dtype=torch.long).t().contiguous() if edges else torch.zeros((2, 0), dtype=torch.long)
    return torch.tensor(node_class), edge_index, torch.tensor(node_batch)


# head_init=zeroshot: logits start as ZEROSHOT_SCALE * (cos - ZEROSHOT_OFFSET), i.e. the stage-1 bi-encoder
ZEROSHOT_SCALE = 10.0
ZEROSHOT_OFFSET = 0.3


class TaxoClassifier(nn.Module):
    """Document encoder + GCN class encoder + bilinear matching.

    head_init='random' is the paper's model as printed: class vector = ego-network sum
    of the GCN outputs, B random. head_init='zeroshot' (default, an initialisation the
    paper leaves open) starts the model at the zero-shot bi-encoder: class features are
    the encoded hypotheses, the class vector is that feature plus a zero-initialised
    projection of the ego-network GCN sum, documents are L2-normalised and B = scale * I.
    Training then moves away from the zero-shot scores only where the core classes say so.
    """

    def __init__(self, encoder: nn.Module | None, class_init: torch.Tensor, taxonomy: Taxonomy, *, pooling: str = "mean",
                 gnn_num_layers: int = 3, gnn_hidden_dim: int = 512, head_init: str = "zeroshot"):
        from torch_geometric.nn import GCNConv

        super().__init__()
        self.encoder = encoder  # None when documents arrive as precomputed embeddings (frozen encoder)
        self.pooling = pooling
        self.zeroshot_init = head_init == "zeroshot"
        dim = class_init.shape[1]
        self.class_features = nn.Parameter(class_init.clone().float())
        dims = [dim] + [gnn_hidden_dim] * gnn_num_layers
        self.gnn = nn.ModuleList(GCNConv(dims[i], dims[i + 1]) for i in range(gnn_num_layers))
        if self.zeroshot_init:
            self.gnn_out = nn.Linear(dims[-1], dim, bias=False)
            nn.init.zeros_(self.gnn_out.weight)
            self.bilinear = nn.Parameter(torch.eye(dim) * ZEROSHOT_SCALE)
            self.bias = nn.Parameter(torch.tensor(-ZEROSHOT_SCALE * ZEROSHOT_OFFSET))
        else:
            self.bilinear = nn.Parameter(torch.empty(dims[-1], dim))
            nn.init.xavier_uniform_(self.bilinear)
            self.bias = nn.Parameter(torch.zeros(()))
        node_class, edge_index, node_batch = ego_graph(taxonomy)
        self.register_buffer("node_class", node_class, persistent=False)
        self.register_buffer("ego_edge_index", edge_index, persistent=False)
        self.register_buffer("node_batch", node_batch, persistent=False)
        self.num_classes = len(taxonomy)

    def class_vectors(self) -> torch.Tensor:
        from torch_geometric.nn import global_add_pool

        x = self.class_features[self.node_class]
        for conv in self.gnn:
            x = F.relu(conv(x, self.ego_edge_index))
        ego_sum = global_add_pool(x, self.node_batch, size=self.num_classes)
        if self.zeroshot_init:
            return self.class_features + self.gnn_out(ego_sum)
        return ego_sum

    def encode(self, input_ids, attention_mask) -> torch.Tensor:
        from taxoclass.stages.text_encoder import pool

        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return pool(hidden, attention_mask, self.pooling)

    def forward(self, input_ids=None, attention_mask=None, doc_embeddings=None) -> torch.Tensor:
        """Logits, documents x classes."""
        docs = doc_embeddings if doc_embeddings is not None else self.encode(input_ids, attention_mask)
        if self.zeroshot_init:
            docs = F.normalize(docs.float(), dim=-1)
        classes = self.class_vectors()
        return (docs.float() @ self.bilinear.t()) @ classes.t().float() + self.bias

    def param_groups(self, encoder_lr: float, head_lr: float, weight_decay: float) -> list[dict]:
        enc = [p for n, p in self.named_parameters() if n.startswith("encoder.") and p.requires_grad]
        head = [p for n, p in self.named_parameters() if not n.startswith("encoder.")]
        groups = [{"params": head, "lr": head_lr, "weight_decay": weight_decay, "name": "head"}]
        if enc:
            groups.insert(0, {"params": enc, "lr": encoder_lr, "weight_decay": weight_decay, "name": "encoder"})
        return groups

    def head_state_dict(self) -> dict:
        return {k: v for k, v in self.state_dict().items() if not k.startswith("encoder.")}


# ---------------------------------------------------------------- data
@dataclass
class DocBatches:
    """Documents as token ids (trainable encoder) or as fixed embeddings (frozen encoder)."""

    input_ids: list[list[int]] | None = None
    embeddings: torch.Tensor | None = None
    pad_id: int = 0

    def __len__(self) -> int:
        return len(self.input_ids) if self.input_ids is not None else len(self.embeddings)

    def subset(self, idx: list[int]) -> DocBatches:
        if self.embeddings is not None:
            return DocBatches(embeddings=self.embeddings[idx])
        return DocBatches(input_ids=[self.input_ids[i] for i in idx], pad_id=self.pad_id)

    def batch(self, idx: list[int], device) -> dict:
        if self.embeddings is not None:
            return {"doc_embeddings": self.embeddings[idx].to(device)}
        seqs = [self.input_ids[i] for i in idx]
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
        att = torch.zeros((len(seqs), width), dtype=torch.long)
        for r, s in enumerate(seqs):
            ids[r, : len(s)] = torch.tensor(s)
            att[r, : len(s)] = 1
        return {"input_ids": ids.to(device), "attention_mask": att.to(device)}


def tokenize(tokenizer, texts: list[str], max_length: int) -> DocBatches:
    enc = tokenizer(list(texts), truncation=True, max_length=max_length)
    return DocBatches(input_ids=enc["input_ids"], pad_id=tokenizer.pad_token_id or 0)


# ---------------------------------------------------------------- training
def amp_context(amp: str, device: torch.device | str):
    device = torch.device(device)
    if amp == "off":
        return torch.autocast(device_type=device.type, enabled=False)
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def check_amp(amp: str, device: torch.device | str) -> None:
    if amp == "fp16" and torch.device(device).type != "cuda":
        raise ConfigError("classifier.amp", "fp16 needs a CUDA device; use bf16 or off on the CPU")


def masked_bce(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """BCE summed over each document's unmasked classes, averaged over documents."""
    loss = F.binary_cross_entropy_with_logits(logits.float(), targets, reduction="none")
    return (loss * mask).sum(1).mean()


def warmup_linear(total_steps: int, warmup_ratio: float):
    warmup = int(total_steps * warmup_ratio)

    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return factor


@torch.no_grad()
def predict_probs(model: TaxoClassifier, docs: DocBatches, device, batch_size: int = 64, amp: str = "off") -> np.ndarray:
    model.eval()
    out = np.zeros((len(docs), model.num_classes), dtype=np.float32)
    for start in range(0, len(docs), batch_size):
        idx = list(range(start, min(start + batch_size, len(docs))))
        with amp_context(amp, device):
            logits = model(**docs.batch(idx, device))
        out[idx] = torch.sigmoid(logits.float()).cpu().numpy()
    return out


@torch.no_grad()
def eval_loss(model, docs: DocBatches, targets, mask, device, batch_size: int, amp: str) -> float:
    model.eval()
    total, n = 0.0, 0
    for start in range(0, len(docs), batch_size):
        idx = list(range(start, min(start + batch_size, len(docs))))
        with amp_context(amp, device):
            logits = model(**docs.batch(idx, device))
        total += masked_bce(logits, targets[idx].to(device), mask[idx].to(device)).item() * len(idx)
        n += len(idx)
    return total / max(n, 1)


def split_train_val(n: int, val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    order = list(range(n))
    random.Random(seed).shuffle(order)
    n_val = int(round(n * val_fraction)) if n >= 10 else 0
    return sorted(order[n_val:]), sorted(order[:n_val])


def _unwrap(model: nn.Module) -> nn.Module:
    return getattr(model, "module", model)  # DDP keeps the model in .module


def snapshot(model: nn.Module) -> dict:
    """A CPU copy of the (unwrapped) model's weights, to restore the best one later."""
    return copy.deepcopy({k: v.detach().cpu() for k, v in _unwrap(model).state_dict().items()})


@dataclass
class SilverValidation:
    """Held-out pseudo-labelled documents: rows of a DocBatches, their targets and mask.

    Stage 3 selects its best epoch on them; stage 4's guard scores the same documents.
    """

    rows: list[int]
    targets: np.ndarray
    mask: np.ndarray

    def loss(self, model, docs: DocBatches, device, batch_size: int, amp: str, env) -> float:
        """The masked BCE on these documents; each rank scores its share, the sum is all-reduced."""
        mine = env.owned(len(self.rows))
        part = 0.0
        if mine:
            part = eval_loss(model, docs.subset([self.rows[j] for j in mine]), torch.from_numpy(self.targets[mine]),
                             torch.from_numpy(self.mask[mine]), device, batch_size, amp) * len(mine)
        total, n = env.all_reduce_sum([part, len(mine)])
        return total / max(n, 1)


def train_classifier(model: TaxoClassifier, docs: DocBatches, targets: np.ndarray, mask: np.ndarray,
                     cfg: ClassifierConfig, device, seed: int, sink: Sink, log_interval: int = 10, env=None) -> dict:
    """Train on the pseudo-labelled documents; returns stats. The model ends with its best-epoch weights.

    `env` (default: one process) decides the batches of this rank, reduces the losses across
    ranks and checkpoints each epoch; a restored checkpoint resumes after its epoch.
    """
    from tqdm.auto import tqdm

    from taxoclass.stages.training_env import LocalEnv

    env = env or LocalEnv()
    check_amp(cfg.amp, device)
    model.to(device)
    targets_t, mask_t = torch.from_numpy(targets), torch.from_numpy(mask)
    train_idx, val_idx = split_train_val(len(docs), cfg.val_fraction, seed)
    stats = {"stage3/train_samples": len(train_idx), "stage3/val_samples": len(val_idx)}
    log = sink if env.rank == 0 else (lambda *a, **k: None)
    log(stats)
    steps_per_epoch = math.ceil(len(train_idx) / (cfg.batch_size * env.world_size))
    total = steps_per_epoch * cfg.epochs
    opt = torch.optim.AdamW(model.param_groups(cfg.learning_rate, cfg.head_learning_rate, cfg.weight_decay))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_linear(total, cfg.warmup_ratio))
    scaler = torch.amp.GradScaler("cuda", enabled=cfg.amp == "fp16")
    ddp = env.prepare_model(model)
    best_loss, best_epoch, best_state, stale, step, start_epoch = math.inf, -1, None, 0, 0, 0
    state = env.restore()
    if state is not None:  # resume after the last finished epoch
        _unwrap(ddp).load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        best_loss, best_epoch, best_state, stale, step = (state[k] for k in ("best_loss", "best_epoch", "best_state", "stale", "step"))
        start_epoch = state["epoch"] + 1
        stats["stage3/resumed_from_epoch"] = start_epoch
    held_out = SilverValidation(val_idx, targets[val_idx], mask[val_idx])
    for epoch in range(start_epoch, cfg.epochs):
        if state is not None and stale >= cfg.early_stopping_patience:
            break
        ddp.train()
        if _unwrap(ddp).encoder is not None and cfg.freeze_encoder:
            _unwrap(ddp).encoder.eval()
        running, count = 0.0, 0
        batches = env.batches(train_idx, cfg.batch_size, seed, epoch)
        for b in tqdm(batches, desc=f"stage 3: epoch {epoch + 1}/{cfg.epochs}", unit="batch", leave=False, disable=env.rank != 0):
            with amp_context(cfg.amp, device):
                logits = ddp(**docs.batch(b, device))
            loss = masked_bce(logits, targets_t[b].to(device), mask_t[b].to(device))
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            sched.step()
            step += 1
            running += loss.item() * len(b)
            count += len(b)
            if step % log_interval == 0 or step == total:
                log({"stage3/train_loss": loss.item(), "stage3/learning_rate": opt.param_groups[0]["lr"],
                     "stage3/epoch": step / steps_per_epoch}, step=step)
        train_sum, train_n = env.all_reduce_sum([running, count])
        train_loss = train_sum / max(train_n, 1)
        if val_idx:
            val_loss = held_out.loss(_unwrap(ddp), docs, device, cfg.batch_size, cfg.amp, env)
        else:  # too few pseudo-labelled documents for a split: select on the training loss
            val_loss = train_loss
        if val_loss < best_loss:
            best_loss, best_epoch, stale = val_loss, epoch, 0
            best_state = snapshot(ddp)
        else:
            stale += 1
        epoch_metrics = {"stage3/epoch_train_loss": train_loss, "stage3/epoch_val_loss": val_loss, "stage3/best_val_loss": best_loss,
                         "stage3/best_epoch": best_epoch, "stage3/epoch": epoch + 1}
        log(epoch_metrics, step=step)
        if env.checkpoints:
            env.checkpoint(epoch_metrics, {
                "model": _unwrap(ddp).state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                "scaler": scaler.state_dict(), "best_loss": best_loss, "best_epoch": best_epoch, "best_state": best_state,
                "stale": stale, "step": step, "epoch": epoch})
        if stale >= cfg.early_stopping_patience:
            break
    if best_state is not None:
        _unwrap(ddp).load_state_dict(best_state)
    stats.update({"stage3/best_val_loss": best_loss, "stage3/best_epoch": best_epoch, "stage3/steps": step})
    return stats
