import pytest
import torch

from model.attention import KVCache, grouped_attention, make_attention_mask, step_mask

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


def test_cache_writes_prompts_and_steps_in_place_at_each_slots_own_position():
    cache = KVCache(num_layers=2, batch=3, num_kv_heads=1, max_len=5, head_dim=2, dtype=torch.float32, device="cpu")
    storage = cache.k[1].data_ptr()
    cache.write_prompt(1, T([2, 0]), torch.ones(2, 1, 3, 2), torch.ones(2, 1, 3, 2))  # two prompts of 3 tokens
    k, _ = cache.write_step(1, T([3, 0, 4]), 2 * torch.ones(3, 1, 1, 2), torch.ones(3, 1, 1, 2))
    assert k.shape == (3, 1, 5, 2) and cache.k[1].data_ptr() == storage
    assert k[:, 0, :, 0].tolist() == [[1, 1, 1, 2, 0], [2, 0, 0, 0, 0], [1, 1, 1, 0, 2]]
    assert cache.k[0].abs().sum() == 0  # layer 0 untouched
    with pytest.raises(IndexError, match="5 positions"):
        cache.write_prompt(0, T([0]), torch.ones(1, 1, 6, 2), torch.ones(1, 1, 6, 2))


def test_step_mask_sees_each_rows_own_past_within_the_window():
    mask = step_mask(T([2, 4]), max_len=6)
    assert mask.shape == (2, 1, 1, 6)
    assert mask[:, 0, 0].int().tolist() == [[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 0]]
    windowed = step_mask(T([2, 4]), max_len=6, sliding_window=2)
    assert windowed[:, 0, 0].int().tolist() == [[0, 1, 1, 0, 0, 0], [0, 0, 0, 1, 1, 0]]


def test_softcapped_attention_in_query_chunks_equals_the_direct_computation(monkeypatch):
    """The memory-lean path (query chunks sized to a scores budget) against one full scores tensor."""
    from model import attention

    torch.manual_seed(1)
    B, K, G, Q, S, D = 2, 2, 4, 300, 300, 8
    q, k, v = torch.randn(B, K * G, Q, D), torch.randn(B, K, S, D), torch.randn(B, K, S, D)
    mask = make_attention_mask(torch.ones(B, S, dtype=torch.bool), torch.arange(S))  # causal
    direct = grouped_attention(q, k, v, mask, scale=0.5, softcap=5.0)
    monkeypatch.setattr(attention, "SCORES_BUDGET", B * K * S * 4 * 37)  # chunks of 37 queries (of 1,200)
    chunked = grouped_attention(q, k, v, mask, scale=0.5, softcap=5.0)
    torch.testing.assert_close(chunked, direct, rtol=1e-5, atol=1e-6)
