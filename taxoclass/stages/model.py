"""Stage 3's model: document encoder + GCN class encoder + bilinear matching (METHOD.md, stage 3).

Features:
- document encoder: a Hugging Face AutoModel (bundled MiniLM by default), mean or [CLS] pooling,
  or precomputed document embeddings when the encoder is frozen (`DocBatches`, `training/doc_batches.py`);
- class encoder: `gnn_num_layers` GCNConv layers (torch_geometric) over each class's ego
  network (the class, its parents, its children), summed over the ego network's nodes;
- matching: logit_ij = c_j^T B D_i + b with a learnable B (and one scalar bias b, which lets the model
  set how rare a positive is; the paper's sigmoid(exp(.)) is not used);
- how the logits are read (`output_mode`, stored with the weights), as the model was trained:
  `SIGMOID` (binary cross-entropy, the paper): each class's probability is sigmoid(logit), a path's
  score the mean probability of its classes; `PATH` (`classifier.loss=path`): a distribution over
  root-to-leaf paths, softmax of each path's mean logit, and a class's probability the sum over the
  paths that hold it; `ZERO_SHOT` (an untrained model, stage 3 stepped aside): sigmoid(logit) per
  class and sigmoid(mean logit) per path, which at the zero-shot start ranks exactly as stage 1's
  refined scores (the logits are affine in the cosine);
- `classifier.head_init`: `zeroshot` (default) starts the model at the stage-1 bi-encoder scores
  (with refined prototypes as the class features when stage 1 made them), `random` is the
  paper's model with random weights.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from taxoclass.amp import amp_context
from taxoclass.data.taxonomy import ROOT, Taxonomy
from taxoclass.training.doc_batches import DocBatches


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
# output modes (see the module docstring)
SIGMOID, ZERO_SHOT, PATH = 0, 1, 2


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
        from taxoclass.decoding import path_membership

        member = torch.from_numpy(path_membership(taxonomy))
        self.register_buffer("path_member", member, persistent=False)  # paths x classes
        self.register_buffer("path_mean", (member / member.sum(1, keepdim=True)).t().contiguous(), persistent=False)
        # stored with the weights: a loaded model reads its logits as it was trained to
        self.register_buffer("output_mode", torch.tensor(ZERO_SHOT if self.zeroshot_init else SIGMOID))
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

    def path_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """Documents x root-to-leaf paths: each path's mean class logit."""
        return logits.float() @ self.path_mean

    def scores(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(class probabilities, path scores) from logits, read as `output_mode` says."""
        mode = int(self.output_mode)
        if mode == PATH:
            paths = torch.softmax(self.path_logits(logits), dim=-1)
            return paths @ self.path_member, paths
        probs = torch.sigmoid(logits.float())
        if mode == ZERO_SHOT:
            return probs, torch.sigmoid(self.path_logits(logits))
        return probs, probs @ self.path_mean

    def param_groups(self, encoder_lr: float, head_lr: float, weight_decay: float, gnn_lr: float | None = None) -> list[dict]:
        """Encoder, head (class features and bias) and the class encoder (GCN, its output, the bilinear
        form; `gnn_lr`, default `head_lr`). A group whose rate is 0 is frozen: left out and no gradient."""
        groups = {"encoder": [], "head": [], "gnn": []}
        for n, p in self.named_parameters():
            if n.startswith("encoder."):
                if p.requires_grad:
                    groups["encoder"].append(p)
            else:
                groups["head" if n in ("class_features", "bias") else "gnn"].append(p)
        rates = {"encoder": encoder_lr, "head": head_lr, "gnn": head_lr if gnn_lr is None else gnn_lr}
        out = []
        for name in ("encoder", "head", "gnn"):
            if not groups[name]:
                continue
            if rates[name] <= 0:
                for p in groups[name]:
                    p.requires_grad_(False)
                continue
            if name != "encoder":  # a group an earlier stage froze learns again when given a rate
                for p in groups[name]:
                    p.requires_grad_(True)
            out.append({"params": groups[name], "lr": rates[name], "weight_decay": weight_decay, "name": name})
        return out

    def head_state_dict(self) -> dict:
        return {k: v for k, v in self.state_dict().items() if not k.startswith("encoder.")}


def tokenize(tokenizer, texts: list[str], max_length: int) -> DocBatches:
    enc = tokenizer(list(texts), truncation=True, max_length=max_length)
    return DocBatches(input_ids=enc["input_ids"], pad_id=tokenizer.pad_token_id or 0)


@torch.no_grad()
def predict_scores(model: TaxoClassifier, docs: DocBatches, device, batch_size: int = 64,
                   amp: str = "off") -> tuple[np.ndarray, np.ndarray]:
    """(class probabilities, path scores), documents x classes and documents x root-to-leaf paths."""
    model.eval()
    classes = np.zeros((len(docs), model.num_classes), dtype=np.float32)
    paths = np.zeros((len(docs), model.path_member.shape[0]), dtype=np.float32)
    for start in range(0, len(docs), batch_size):
        idx = list(range(start, min(start + batch_size, len(docs))))
        with amp_context(amp, device):
            logits = model(**docs.batch(idx, device))
        c, p = model.scores(logits)
        classes[idx], paths[idx] = c.cpu().numpy(), p.cpu().numpy()
    return classes, paths


def predict_probs(model: TaxoClassifier, docs: DocBatches, device, batch_size: int = 64, amp: str = "off") -> np.ndarray:
    """Class probabilities, documents x classes."""
    return predict_scores(model, docs, device, batch_size, amp)[0]
