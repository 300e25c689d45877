"""Frozen-encoder features and their scores: the weighted kNN vote against a brute-force reference."""
from __future__ import annotations

import math

import pytest
import torch

from vitmae.families.features import knn_accuracy, knn_scores


def brute_force_votes(bank, bank_labels, queries, num_classes, k, temperature):
    """Plain Python: cosine similarity to every bank item, sort, the k best vote exp(sim / T)."""
    votes = []
    for q in queries.tolist():
        sims = []
        for j, b in enumerate(bank.tolist()):
            dot = sum(x * y for x, y in zip(q, b))
            sims.append((dot / (math.sqrt(sum(x * x for x in q)) * math.sqrt(sum(y * y for y in b))), j))
        sims.sort(key=lambda s: -s[0])
        row = [0.0] * num_classes
        for sim, j in sims[:k]:
            row[int(bank_labels[j])] += math.exp(sim / temperature)
        votes.append(row)
    return torch.tensor(votes)


@pytest.mark.parametrize("k,temperature", [(1, 0.07), (5, 0.07), (5, 1.0), (40, 0.5)])
def test_knn_matches_a_brute_force_reference(k, temperature):
    g = torch.Generator().manual_seed(k)
    bank, labels = torch.randn(30, 6, generator=g), torch.randint(0, 4, (30,), generator=g)
    queries = torch.randn(12, 6, generator=g)
    expected = brute_force_votes(bank, labels, queries, 4, min(k, 30), temperature)
    got = knn_scores(bank * 3.0, labels, queries, 4, k, temperature, chunk=5)  # scale-free: cosine
    assert torch.allclose(got, expected.float(), rtol=1e-4)
    if k == 1:  # the nearest neighbour's label
        nearest = (torch.nn.functional.normalize(queries, dim=1) @ torch.nn.functional.normalize(bank, dim=1).T).argmax(1)
        assert torch.equal(got.argmax(1), labels[nearest])


def test_k_and_temperature_decide_the_vote():
    # One very close neighbour of class 0, three slightly farther ones of class 1.
    query = torch.tensor([[1.0, 0.0]])
    angle = lambda cos: [cos, math.sqrt(1 - cos**2)]  # noqa: E731
    bank = torch.tensor([angle(0.99), angle(0.9), angle(0.9), angle(0.9), angle(-1.0)])
    labels = torch.tensor([0, 1, 1, 1, 1])
    assert knn_scores(bank, labels, query, 2, k=1, temperature=1.0).argmax().item() == 0
    assert knn_scores(bank, labels, query, 2, k=4, temperature=1.0).argmax().item() == 1  # 3 e^.9 > e^.99
    assert knn_scores(bank, labels, query, 2, k=4, temperature=0.01).argmax().item() == 0  # e^99 > 3 e^90
    acc = knn_accuracy(bank, labels, query, torch.tensor([0]), k=4, temperature=0.01, num_classes=2)
    assert acc == {"top1": 100.0, "top5": 100.0}
