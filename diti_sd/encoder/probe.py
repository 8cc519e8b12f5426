"""Linear probes on z: logistic regression per attribute, scored by average precision on held-out images.

Two ways to fit it (``probe.method``): ``reference``, the DiTi reference's (``eval/multitask_classification.py``:
Adam on z as it is, flipped images, the epoch of best validation AP), which its published APs come from, and
``lbfgs``, a full-batch fit on standardised z with weight decay that needs no validation split.

``probe_by_subsets`` repeats the probe on groups of subsets (one stage of time-steps at a time): what
each stage's dimensions hold. An untrained encoder's dimensions already hold a lot, so read it beside the
same probe at the initial weights, and beside ``transfer.subset_transfer`` (what the shift network reads).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from ..preprocessing import uint8_to_float
from .attributed import AttributedDataset, AttributedImages


@torch.no_grad()
def extract_features(model, data: AttributedImages, batch_size: int = 256, num_workers: int = 0,
                     progress: bool = True, flip: bool = False) -> torch.Tensor:
    """z for every image (``flip``: of its mirror image), (N, z_dim) float32 on the CPU."""
    model.eval()
    dataset = AttributedDataset.from_config(data, model.image_size, model.recipe.data)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=num_workers)
    feats = []
    for pixels in tqdm(loader, desc="encode", disable=not progress, leave=False):
        x0 = uint8_to_float(pixels.to(model.device))
        feats.append(model.encode(x0.flip(-1) if flip else x0).float().cpu())
    return torch.cat(feats)


@dataclass
class ProbeFeatures:
    """What a probe is fitted on: z of the probe-train images with their attributes, and for the reference's
    probe z of the same images mirrored and of validation images."""

    train: torch.Tensor
    y_train: np.ndarray
    train_flipped: torch.Tensor | None = None
    val: torch.Tensor | None = None
    y_val: np.ndarray | None = None

    def columns(self, keep) -> ProbeFeatures:
        """The same images on the dimensions ``keep`` selects."""
        def pick(z):
            return None if z is None else z[:, keep]

        return ProbeFeatures(self.train[:, keep], self.y_train, pick(self.train_flipped), pick(self.val), self.y_val)


def fit_probe(features: ProbeFeatures, cfg) -> tuple:
    """A linear probe by ``cfg.method`` (a recipe's ``probe`` section), in :func:`probe_scores`'s form."""
    if cfg.method == "reference":
        return fit_reference_probe(features, cfg.epochs, cfg.lr, cfg.train_batch_size)
    return fit_linear_probe(features.train, features.y_train, cfg.steps, weight_decay=cfg.weight_decay)


def fit_reference_probe(features: ProbeFeatures, epochs: int = 15, lr: float = 1e-3, batch_size: int = 128,
                        seed: int = 0) -> tuple:
    """The DiTi reference's probe: ``nn.Linear`` on z as it is, Adam, the mean binary cross-entropy over a batch's
    images and attributes, batches in the data set's order (its loader does not shuffle), each image mirrored or
    not afresh every epoch (its training transform's flip), and the epoch of best mean validation AP kept (the
    first, on a tie)."""
    if features.train_flipped is None or features.val is None:
        raise ValueError("the reference's probe needs the train images mirrored and validation images")
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        linear = torch.nn.Linear(features.train.shape[1], features.y_train.shape[1])
    optimizer = torch.optim.Adam(linear.parameters(), lr=lr)
    target = torch.as_tensor(np.asarray(features.y_train), dtype=torch.float32)
    best, kept = -np.inf, None
    for _ in range(epochs):
        mirrored = torch.rand(len(target), generator=generator) < 0.5
        z = torch.where(mirrored.view(-1, 1), features.train_flipped, features.train)
        for i in range(0, len(target), batch_size):
            optimizer.zero_grad()
            loss = torch.nn.functional.binary_cross_entropy_with_logits(linear(z[i:i + batch_size]),
                                                                        target[i:i + batch_size])
            loss.backward()
            optimizer.step()
        probe = _as_probe(linear)
        ap = float(np.nanmean(held_out_ap(probe, features.val, features.y_val)))
        if kept is None or ap > best:
            best, kept = ap, probe
    return kept


def _as_probe(linear: torch.nn.Linear) -> tuple:
    dim = linear.in_features
    return (linear.weight.detach().T.clone(), linear.bias.detach().clone(), torch.zeros(dim), torch.ones(dim))


def average_precision(scores: np.ndarray, labels: np.ndarray) -> float:
    """scikit-learn's average precision; nan where ``labels`` has no positive (it is undefined there)."""
    from sklearn.metrics import average_precision_score

    labels = np.asarray(labels).astype(bool)
    if labels.sum() == 0:
        return float("nan")
    return float(average_precision_score(labels, np.asarray(scores)))


def fit_linear_probe(z: torch.Tensor, y: np.ndarray, steps: int = 300, lr: float = 1e-2,
                     weight_decay: float = 1e-4, seed: int = 0):
    """One logistic regression per attribute (columns of y), jointly, on standardised z.
    Returns (W (D, A), b (A,), mean, std) so that logits = ((z - mean) / std) @ W + b."""
    torch.manual_seed(seed)
    mean, std = z.mean(0), z.std(0).clamp_min(1e-6)
    x = (z - mean) / std
    target = torch.as_tensor(np.asarray(y), dtype=torch.float32)
    weight = torch.zeros(x.shape[1], target.shape[1], requires_grad=True)
    bias = torch.zeros(target.shape[1], requires_grad=True)
    opt = torch.optim.LBFGS([weight, bias], lr=1.0, max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(x @ weight + bias, target)
        loss = loss + weight_decay * weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return weight.detach(), bias.detach(), mean, std


def probe_scores(probe, z: torch.Tensor) -> torch.Tensor:
    weight, bias, mean, std = probe
    return ((z - mean) / std) @ weight + bias


def held_out_ap(probe, z_test: torch.Tensor, y_test: np.ndarray) -> list[float]:
    """AP per attribute of a fitted probe's scores on held-out z."""
    scores = probe_scores(probe, z_test).numpy()
    return [average_precision(scores[:, j], y_test[:, j]) for j in range(y_test.shape[1])]


def stage_groups(layout) -> list[tuple[str, list[int]]]:
    """The subsets of each recipe stage, named by their time-step range."""
    groups, start = [], 0
    for end, _ in layout.stages:
        members = [i for i in range(layout.k) if start <= layout.range_starts[i] < end]
        groups.append((f"t {start}-{end}", members))
        start = end
    return groups


def probe_by_subsets(layout, features: ProbeFeatures, z_test, y_test, cfg, groups=None) -> dict[str, list[float]]:
    """Test AP per attribute of a probe (``cfg``: a recipe's ``probe`` section) on the dimensions of each group of
    subsets alone (default: one group a stage)."""
    results = {}
    for name, members in groups or stage_groups(layout):
        keep = layout.dims_of(members)
        results[name] = held_out_ap(fit_probe(features.columns(keep), cfg), z_test[:, keep], y_test)
    return results
