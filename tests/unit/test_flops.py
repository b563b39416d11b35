"""FLOP counts against the analytic count of a ViT (2 FLOPs per multiply-add; norms,
softmax and activations not counted, as torch's counter does not count them)."""

import torch
from timm.models.vision_transformer import Block

from instageo.model.train import flops


def analytic_block(tokens: int, dim: int, mlp_ratio: int = 4) -> int:
    """qkv (3 d^2), projection (d^2), MLP (2 * ratio * d^2) per token; Q K^T and A V (N^2 d each)."""
    per_token = 3 * dim * dim + dim * dim + 2 * mlp_ratio * dim * dim
    return 2 * tokens * per_token + 2 * 2 * tokens * tokens * dim


def test_a_vit_block_counts_exactly_the_analytic_flops_attention_included():
    torch.manual_seed(0)
    for tokens, dim, heads in ((197, 64, 4), (50, 96, 6)):
        block = Block(dim, heads, mlp_ratio=4, qkv_bias=True)
        assert flops(block, torch.randn(1, tokens, dim)) == analytic_block(tokens, dim)


def test_the_attention_term_is_what_torchs_plain_counter_missed_on_cpu():
    from torch.utils.flop_counter import FlopCounterMode

    block = Block(64, 4, mlp_ratio=4)
    x = torch.randn(1, 197, 64)
    with torch.no_grad(), FlopCounterMode(display=False) as plain:
        block(x)
    assert flops(block, x) - plain.get_total_flops() == 4 * 197 * 197 * 64
