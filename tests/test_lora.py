import pytest
import torch
from torch import nn

from diti_sd.lora import ClassAdapters, ClassRouter, StackedLoRALinear, find_targets
from diti_sd.recipes import LoraConfig
from diti_sd.testing.tiny import build_tiny_backbone
from diti_sd.training.optim import ClassAdamW, clip_grad_norm_per_class


@pytest.mark.parametrize("rank, alpha, shape", [(1, 1.0, (5, 7)), (4, 8.0, (5, 3, 7)), (8, 4.0, (5, 2, 3, 7))])
def test_stacked_layer_matches_each_class_applied_alone(rank, alpha, shape):
    torch.manual_seed(0)
    base = nn.Linear(7, 6)
    router = ClassRouter()
    layer = StackedLoRALinear(base, num_classes=3, rank=rank, alpha=alpha, router=router)
    with torch.no_grad():
        layer.lora_B.normal_()
    x = torch.randn(*shape, requires_grad=True)
    index = torch.tensor([2, 0, 1, -1, 2])
    router.index, router.scale = index, 0.6
    y = layer(x)
    weights = torch.randn_like(y)
    (y * weights).sum().backward()

    # independent reference: per sample, the plain formula with that class's own matrices
    a_ref = layer.lora_A.detach().clone().requires_grad_(True)
    b_ref = layer.lora_B.detach().clone().requires_grad_(True)
    x_ref = x.detach().clone().requires_grad_(True)
    outs = []
    for i, c in enumerate(index.tolist()):
        out = base(x_ref[i])
        if c >= 0:
            out = out + 0.6 * (alpha / rank) * (x_ref[i] @ a_ref[c].T @ b_ref[c].T)
        outs.append(out)
    y_ref = torch.stack(outs)
    (y_ref * weights).sum().backward()
    assert torch.allclose(y, y_ref, atol=1e-5)
    assert torch.allclose(x.grad, x_ref.grad, atol=1e-5)
    assert torch.allclose(layer.lora_A.grad, a_ref.grad, atol=1e-5)
    assert torch.allclose(layer.lora_B.grad, b_ref.grad, atol=1e-5)
    assert layer.lora_A.grad[:, :, :].abs().sum() > 0


def test_no_index_means_the_base_layer():
    base = nn.Linear(4, 4)
    layer = StackedLoRALinear(base, 2, 2, 2.0, ClassRouter())
    with torch.no_grad():
        layer.lora_B.fill_(1.0)
    x = torch.randn(3, 4)
    assert torch.equal(layer(x), base(x))


def test_adapters_inject_filter_by_block_and_remove_cleanly():
    bb = build_tiny_backbone(seed=0, block_out_channels=(32, 32, 64))
    before = {n for n, m in bb.unet.named_modules() if isinstance(m, nn.Linear)}
    all_names = find_targets(bb.unet, ["to_q", "to_k", "to_v", "to_out.0"])
    kept = find_targets(bb.unet, ["to_q", "to_k", "to_v", "to_out.0"], "all-1")
    assert 0 < len(kept) < len(all_names)
    assert all(n.startswith(("down_blocks.1.", "down_blocks.2.", "up_blocks.1.", "up_blocks.2.", "mid_block."))
               for n in kept)
    with pytest.raises(ValueError, match="unknown LoRA block filter"):
        find_targets(bb.unet, ["to_q"], "all-3")
    adapters = ClassAdapters(bb, 3, LoraConfig(rank=2, feed_forward=True, text_rank=2))
    assert any(".ff.net.2" in n for n in adapters.unet_names) and adapters.text_names
    state = adapters.lora_state_dict()
    assert state[f"unet.{adapters.unet_names[0]}.lora_A"].shape[:2] == (3, 2)
    adapters.remove()
    after = {n for n, m in bb.unet.named_modules() if isinstance(m, nn.Linear)}
    assert after == before
    assert not any(isinstance(m, StackedLoRALinear) for m in bb.text_encoder.modules())


def test_class_adamw_equals_torch_adamw_per_class_and_skips_absent_classes():
    torch.manual_seed(0)
    p = nn.Parameter(torch.randn(3, 4, 5))
    ref = nn.Parameter(p.detach()[1].clone())
    opt = ClassAdamW([p], lr=1e-2, weight_decay=0.1)
    ref_opt = torch.optim.AdamW([ref], lr=1e-2, weight_decay=0.1)
    untouched = p.detach()[2].clone()
    for step in range(5):
        g = torch.randn(4, 5)
        p.grad = torch.zeros_like(p)
        p.grad[1] = g
        p.grad[0] = g * 2
        ref.grad = g.clone()
        # class 0 only every other step, class 2 never
        opt.active_classes = torch.tensor([1, 0] if step % 2 == 0 else [1])
        opt.step()
        ref_opt.step()
    assert torch.allclose(p.detach()[1], ref.detach(), atol=1e-6)
    assert torch.equal(p.detach()[2], untouched)
    assert opt.state[p]["step"].tolist() == [3.0, 5.0, 0.0]


def test_per_class_clipping_treats_classes_separately():
    p = nn.Parameter(torch.zeros(2, 3))
    p.grad = torch.tensor([[3.0, 4.0, 0.0], [0.3, 0.4, 0.0]])
    norms = clip_grad_norm_per_class([p], 1.0, torch.tensor([0, 1]))
    assert torch.allclose(norms, torch.tensor([5.0, 0.5]))
    assert torch.allclose(p.grad[0].norm(), torch.tensor(1.0), atol=1e-4)
    assert torch.allclose(p.grad[1], torch.tensor([0.3, 0.4, 0.0]))
