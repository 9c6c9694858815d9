import pytest
import torch

from model.attention import KVCache, grouped_attention, make_attention_mask

T = torch.tensor
VALID = T([[False, True, True, True]])  # one left pad


@pytest.mark.parametrize(
    "prefix, window, expected",
    [
        # causal with padding: the pad query sees only itself, real queries skip the pad key
        (None, None, [[1, 0, 0, 0], [0, 1, 0, 0], [0, 1, 1, 0], [0, 1, 1, 1]]),
        # prefix tokens 1-2 see each other both ways; token 3 (suffix) stays causal
        (T([[False, True, True, False]]), None, [[1, 0, 0, 0], [0, 1, 1, 0], [0, 1, 1, 0], [0, 1, 1, 1]]),
        # sliding window of 2: a key at least 2 steps back is hidden
        (None, 2, [[1, 0, 0, 0], [0, 1, 0, 0], [0, 1, 1, 0], [0, 0, 1, 1]]),
        # the prefix stays fully bidirectional even past the window (as transformers does)
        (T([[False, True, True, True]]), 1, [[1, 0, 0, 0], [0, 1, 1, 1], [0, 1, 1, 1], [0, 1, 1, 1]]),
    ],
)
def test_mask_table(prefix, window, expected):
    mask = make_attention_mask(VALID, torch.arange(4), prefix, window)
    assert mask.shape == (1, 1, 4, 4)
    assert mask[0, 0].int().tolist() == expected


def test_mask_for_one_decode_query_sees_the_past_within_the_window():
    valid = T([[False, True, True, True, True, True]])
    mask = make_attention_mask(valid, T([5]), None, sliding_window=3)
    assert mask[0, 0].int().tolist() == [[0, 0, 0, 1, 1, 1]]


@pytest.mark.parametrize("heads, kv_heads, q_len", [(8, 1, 1), (8, 2, 5), (4, 4, 3)])
@pytest.mark.parametrize("softcap", [None, 5.0])
def test_grouped_attention_equals_repeated_heads(heads, kv_heads, q_len, softcap):
    torch.manual_seed(0)
    B, S, D = 2, 7, 16
    q, k, v = torch.randn(B, heads, q_len, D), torch.randn(B, kv_heads, S, D), torch.randn(B, kv_heads, S, D)
    mask = make_attention_mask(torch.ones(B, S, dtype=torch.bool), torch.arange(S - q_len, S))
    mask[0, ..., 0] = False  # hide one key in the first row only
    out = grouped_attention(q, k, v, mask, scale=0.3, softcap=softcap)
    # reference: each kv head repeated for its query heads (head h uses kv head h // (heads // kv_heads))
    kr, vr = (x.repeat_interleave(heads // kv_heads, dim=1) for x in (k, v))
    scores = q @ kr.transpose(-1, -2) * 0.3
    if softcap:
        scores = torch.tanh(scores / softcap) * softcap
    ref = torch.softmax(scores.masked_fill(~mask, float("-inf")), -1) @ vr
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_cache_writes_in_place_and_refuses_overflow():
    cache = KVCache(num_layers=2, batch=1, num_kv_heads=1, max_len=4, head_dim=2, dtype=torch.float32, device="cpu")
    storage = cache.k.data_ptr()
    k, v = cache.update(1, 0, torch.ones(1, 1, 3, 2), torch.ones(1, 1, 3, 2))
    assert k.shape == (1, 1, 3, 2) and cache.k.data_ptr() == storage
    k, _ = cache.update(1, 3, 2 * torch.ones(1, 1, 1, 2), torch.ones(1, 1, 1, 2))
    assert k[0, 0, :, 0].tolist() == [1, 1, 1, 2] and cache.k[0].abs().sum() == 0
    with pytest.raises(IndexError, match="4 slots"):
        cache.update(0, 4, torch.ones(1, 1, 1, 2), torch.ones(1, 1, 1, 2))
