"""Linear probes on z: logistic regression per attribute, scored by average precision on held-out images.

``probe_by_subsets`` repeats the probe on groups of subsets (one stage of time-steps at a time): what
each stage's dimensions hold. An untrained encoder's dimensions already hold a lot, so read it beside the
same probe at the initial weights, and beside ``transfer.subset_transfer`` (what the shift network reads).
"""

from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

from ..preprocessing import uint8_to_float
from .attributed import AttributedDataset, AttributedImages


@torch.no_grad()
def extract_features(model, data: AttributedImages, batch_size: int = 256, num_workers: int = 0,
                     progress: bool = True) -> torch.Tensor:
    """z for every image, (N, z_dim) float32 on the CPU."""
    model.eval()
    dataset = AttributedDataset.from_config(data, model.image_size, model.recipe.data)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=num_workers)
    feats = []
    for pixels in tqdm(loader, desc="encode", disable=not progress, leave=False):
        x0 = uint8_to_float(pixels.to(model.device))
        feats.append(model.encode(x0).float().cpu())
    return torch.cat(feats)


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


def probe_ap(z_train: torch.Tensor, y_train: np.ndarray, z_test: torch.Tensor, y_test: np.ndarray,
             steps: int = 300, weight_decay: float = 1e-4) -> list[float]:
    """Test AP of a linear probe per attribute."""
    return held_out_ap(fit_linear_probe(z_train, y_train, steps=steps, weight_decay=weight_decay), z_test, y_test)


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


def probe_by_subsets(layout, z_train, y_train, z_test, y_test, groups=None, steps: int = 300,
                     weight_decay: float = 1e-4) -> dict[str, list[float]]:
    """AP per attribute from the dimensions of each group of subsets alone (default: one group a stage)."""
    results = {}
    for name, members in groups or stage_groups(layout):
        keep = layout.dims_of(members)
        results[name] = probe_ap(z_train[:, keep], y_train, z_test[:, keep], y_test, steps, weight_decay)
    return results
