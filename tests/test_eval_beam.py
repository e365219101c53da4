"""Beam search: exact against exhaustive scoring, identical to Hugging Face `generate`."""

from __future__ import annotations

import pytest
import torch

from gramc.eval.beam import beam_search, score_sequences
from gramc.ids.trie import Trie
from gramc.model.t5 import T5, T5Dims
from test_eval_trie import random_catalog

VOCAB = 48


def tiny_t5(seed: int) -> T5:
    torch.manual_seed(seed)
    dims = T5Dims(vocab_size=VOCAB, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=2,
                  num_heads=4, dropout_rate=0.0)
    return T5(dims).eval()


def memory(B: int, M: int, d: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    mem = torch.randn(B, M, d, generator=g)
    lens = torch.randint(2, M + 1, (B,), generator=g)
    mask = torch.arange(M).unsqueeze(0) < lens.unsqueeze(1)
    return mem, mask


@pytest.mark.parametrize("softmax", ["vocab", "trie"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_full_width_beam_equals_exhaustive_ranking(seed, softmax):
    targets = random_catalog(36, seed=seed, first=5, deeper=3, max_levels=4)
    trie = Trie.build(targets)
    model = tiny_t5(seed)
    mem, mask = memory(3, 7, 32, seed)
    ref = score_sequences(model, mem, mask, targets, softmax=softmax, trie=trie)  # [B, items]
    for lp, es in [(0.0, "heuristic"), (1.0, "never")]:
        res = beam_search(model, mem, mask, trie, beams=40, length_penalty=lp, early_stopping=es, softmax=softmax)
        ref_lp = score_sequences(model, mem, mask, targets, length_penalty=lp, softmax=softmax, trie=trie)
        assert res.invalid == 0
        for b in range(3):
            order = torch.argsort(ref_lp[b], descending=True)
            got = res.items[b][res.items[b] >= 0]
            assert got.tolist() == order.tolist(), (lp, b)
            torch.testing.assert_close(res.scores[b, : len(got)], ref_lp[b, order], atol=1e-5, rtol=0)
            assert torch.isinf(res.scores[b, len(got):]).all()
    # the trie softmax is a distribution over the items, the vocabulary softmax leaks mass elsewhere
    mass = torch.exp(ref).sum(1)
    if softmax == "trie":
        torch.testing.assert_close(mass, torch.ones(3), atol=1e-5, rtol=0)
    else:
        assert bool((mass < 0.99).all())
    # sanity: the reference itself differs between users (the memory matters)
    assert not torch.equal(torch.argsort(ref[0]), torch.argsort(ref[1]))


def test_narrow_beam_finds_the_best_items_and_excludes_history():
    targets = random_catalog(36, seed=5, first=5, deeper=3, max_levels=4)
    trie = Trie.build(targets)
    model = tiny_t5(5)
    mem, mask = memory(2, 6, 32, 5)
    ref = score_sequences(model, mem, mask, targets)
    res = beam_search(model, mem, mask, trie, beams=4)
    # a narrow beam can miss items, but whatever it returns is scored exactly
    for b in range(2):
        torch.testing.assert_close(res.scores[b], ref[b, res.items[b]], atol=1e-5, rtol=0)
    best = ref.argmax(1)
    excl = torch.stack([best, torch.full_like(best, -1)], 1)
    res2 = beam_search(model, mem, mask, trie, beams=40, exclude=excl)
    for b in range(2):
        got = res2.items[b][res2.items[b] >= 0].tolist()
        assert int(best[b]) not in got and len(got) == len(targets) - 1


def test_excluded_items_take_no_beam_so_a_narrow_search_still_returns_k_items():
    targets = random_catalog(60, seed=7, first=6, deeper=4, max_levels=4)
    trie = Trie.build(targets)
    model = tiny_t5(7)
    mem, mask = memory(3, 6, 32, 7)
    ref = score_sequences(model, mem, mask, targets)
    order = ref.argsort(1, descending=True)
    excl = order[:, :8]  # more excluded items than beams, the model's very best ones
    res = beam_search(model, mem, mask, trie, beams=5, exclude=excl)
    for b in range(3):
        got = res.items[b].tolist()
        assert -1 not in got and not set(got) & set(excl[b].tolist())
        torch.testing.assert_close(res.scores[b], ref[b, res.items[b]], atol=1e-5, rtol=0)
    # with a beam as wide as the catalogue, the excluded search is the exhaustive ranking without them
    wide = beam_search(model, mem, mask, trie, beams=60, exclude=excl)
    for b in range(3):
        assert wide.items[b][:10].tolist() == order[b, 8:18].tolist()


def _hf_topk(hf, mem, mask, trie, beams, lp, early):
    from transformers.modeling_outputs import BaseModelOutput

    out = hf.generate(encoder_outputs=BaseModelOutput(last_hidden_state=mem.clone()), attention_mask=mask.long(),
                      num_beams=beams, num_return_sequences=beams, do_sample=False,
                      prefix_allowed_tokens_fn=trie.hf_prefix_allowed_tokens_fn(0), max_length=trie.max_len + 1,
                      length_penalty=lp, early_stopping=early, decoder_start_token_id=0,
                      output_scores=True, return_dict_in_generate=True)
    seqs = out.sequences.view(mem.shape[0], beams, -1).tolist()
    scores = out.sequences_scores.view(mem.shape[0], beams)
    result = []
    for b in range(mem.shape[0]):
        row = []
        for seq, s in zip(seqs[b], scores[b].tolist()):
            if s < -1e6:  # HF's placeholders for missing hypotheses
                continue
            toks = seq[1:]
            toks = toks[: toks.index(1) + 1]
            row.append((trie.item_of(toks), s))
        result.append(row)
    return result


@pytest.mark.parametrize("lp,early,hf_early", [(0.0, "heuristic", False), (1.0, "heuristic", False),
                                               (1.0, "never", "never"), (0.5, "finished", True)])
def test_same_items_and_scores_as_hugging_face_generate(lp, early, hf_early):
    targets = random_catalog(60, seed=11, first=24, deeper=3, max_levels=4)
    trie = Trie.build(targets)
    model = tiny_t5(11)
    hf = model.to_hf_model()
    mem, mask = memory(3, 9, 32, 11)
    beams = 8
    ours = beam_search(model, mem, mask, trie, beams=beams, length_penalty=lp, early_stopping=early)
    theirs = _hf_topk(hf, mem, mask, trie, beams, lp, hf_early)
    for b in range(3):
        mine = [(int(i), float(s)) for i, s in zip(ours.items[b], ours.scores[b]) if i >= 0]
        assert [i for i, _ in mine] == [i for i, _ in theirs[b]]
        for (_, s1), (_, s2) in zip(mine, theirs[b]):
            assert abs(s1 - s2) < 1e-4
        assert len(mine) == beams


def hf4_reference(hf, mem, mask, trie, beams, lp):
    """HF 4.x beam search (GRAM's transformers 4.26, `early_stopping=False`) for one user, written out.

    The rules of 4.x's `BeamSearchScorer.process` / `BeamHypotheses`, step by step over HF's own model:
    per step the top 2*beams of (beam score + log-softmax over the vocabulary, trie-masked); an eos
    candidate ranked below `beams` is dropped, else it becomes a hypothesis scored
    `sum / len(tokens so far, start token included)**lp`; the first `beams` non-eos ones run on.
    The user is done once `beams` hypotheses exist and the worst of them is >= the step's best
    candidate score (eos ones included) / cur_len**lp, cur_len = tokens so far (start included).
    """
    allowed = trie.hf_prefix_allowed_tokens_fn(0)
    enc = mem.expand(beams, -1, -1).clone()
    att = mask.expand(beams, -1).long()
    seqs = torch.zeros(beams, 1, dtype=torch.long)
    run = torch.full((beams,), -1e9)
    run[0] = 0.0
    hyps: list[tuple[float, list[int]]] = []
    for _ in range(trie.max_len):
        cur_len = seqs.shape[1]
        logits = hf(encoder_outputs=(enc,), attention_mask=att, decoder_input_ids=seqs).logits[:, -1]
        logp = torch.log_softmax(logits.float(), -1)
        block = torch.full_like(logp, float("-inf"))
        for i in range(beams):
            block[i, allowed(0, seqs[i])] = 0.0
        scores = (logp + block + run[:, None]).view(-1)
        top, idx = scores.topk(2 * beams)
        nxt = []
        for rank, (s, ix) in enumerate(zip(top.tolist(), idx.tolist())):
            b, tok = divmod(ix, logp.shape[1])
            if tok == 1:
                if rank < beams:
                    hyps.append((s / cur_len ** lp, seqs[b].tolist()[1:] + [1]))
                    hyps = sorted(hyps, key=lambda h: -h[0])[:beams]
            else:
                nxt.append((s, b, tok))
            if len(nxt) == beams:
                break
        if len(hyps) == beams and hyps[-1][0] >= top.max().item() / cur_len ** lp:
            break
        run = torch.tensor([s for s, _, _ in nxt])
        seqs = torch.cat([seqs[[b for _, b, _ in nxt]], torch.tensor([[t] for _, _, t in nxt])], 1)
    return [(trie.item_of(toks), s) for s, toks in hyps if s > -1e6]


@torch.no_grad()
def test_hf4_early_stopping_equals_hf_4x_where_it_differs_from_the_heuristic():
    # a catalog with many 1-level IDs beside deeper ones, 3 beams, length penalty 1 (GRAM's): the step's
    # best candidate is often a finishing one, so HF 4.x's rule searches on where the heuristic stops
    targets = random_catalog(50, seed=16, first=20, deeper=2, max_levels=4)
    trie = Trie.build(targets)
    model = tiny_t5(16)
    hf = model.to_hf_model().eval()
    mem, mask = memory(16, 9, 32, 16)
    beams, lp = 3, 1.0
    hf4 = beam_search(model, mem, mask, trie, beams=beams, length_penalty=lp, early_stopping="hf4")
    heur = beam_search(model, mem, mask, trie, beams=beams, length_penalty=lp, early_stopping="heuristic")
    hf5 = _hf_topk(hf, mem, mask, trie, beams, lp, False)  # transformers 5: the heuristic rule
    differ = 0
    for b in range(16):
        ref = hf4_reference(hf, mem[b: b + 1], mask[b: b + 1], trie, beams, lp)
        mine = [(int(i), float(s)) for i, s in zip(hf4.items[b], hf4.scores[b]) if i >= 0]
        assert [i for i, _ in mine] == [i for i, _ in ref], b
        assert max(abs(s1 - s2) for (_, s1), (_, s2) in zip(mine, ref)) < 1e-4
        assert heur.items[b][heur.items[b] >= 0].tolist() == [i for i, _ in hf5[b]], b
        differ += int(heur.items[b].tolist() != hf4.items[b].tolist())
    assert differ >= 3  # the cases discriminate between the two rules
