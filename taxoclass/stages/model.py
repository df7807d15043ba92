"""Stage 3's model: document encoder + GCN class encoder + bilinear matching (METHOD.md, stage 3).

Features:
- document encoder: a Hugging Face AutoModel (bundled MiniLM by default), mean or [CLS] pooling,
  or precomputed document embeddings when the encoder is frozen (`DocBatches`);
- class encoder: `gnn_num_layers` GCNConv layers (torch_geometric) over each class's ego
  network (the class, its parents, its children), summed over the ego network's nodes;
- matching p_ij = sigmoid(c_j^T B D_i + b) with a learnable B (and one scalar bias b, which lets
  the model set how rare a positive is; the paper's sigmoid(exp(.)) is not used);
- `classifier.head_init`: `zeroshot` (default) starts the model at the stage-1 bi-encoder scores
  (with refined prototypes as the class features when stage 1 made them), `random` is the
  paper's model with random weights.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from taxoclass.data.taxonomy import ROOT, Taxonomy
from taxoclass.stages.amp import amp_context


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
