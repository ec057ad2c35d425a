import torch
import torch.nn as nn

from srkd.engine.ema import EMA


def test_ema_warmup_forgets_the_random_init_in_short_runs():
    model = nn.Linear(4, 4)
    ema = EMA(model, decay=0.999)
    with torch.no_grad():
        model.weight.fill_(1.0)
    for _ in range(300):
        ema.update(model)
    # Without warm-up 0.999**300 = 74 % of the initial weights would remain.
    assert torch.allclose(ema.module.weight, torch.ones(4, 4), atol=1e-3)


def test_ema_state_round_trip_keeps_update_count():
    model = nn.Linear(2, 2)
    ema = EMA(model, decay=0.99)
    for _ in range(7):
        ema.update(model)
    other = EMA(model, decay=0.5)
    other.load_state_dict(ema.state_dict())
    assert other.updates == 7 and other.decay == 0.99
