"""The opt-in EOT bench row: `ifqa-loss bench --losses ifqa,ifqa-eot` (not in the default run)."""
from ifqa_loss.bench import suite
from ifqa_loss.bench.losses import build_loss, inputs


def test_eot_row_is_opt_in_and_costs_more_than_plain_ifqa():
    assert "ifqa-eot" not in suite.Config().losses
    cfg = suite.Config(losses=("ifqa", "ifqa-eot"), variants=("fp32",), batch_sizes=(1,), input_sizes=(64,), warmup=0,
                       repeats=2, goal_rounds=1, goal_batch=1, goal_size=64, ifqa_widths=(4, 8, 8, 16, 16))
    loss_fn, note = build_loss("ifqa-eot", "fp32", cfg)
    pred, target = inputs(2, 64, "cpu")
    assert loss_fn(pred, target).shape == () and note == "random weights"
    rows = suite.measure_losses(cfg, log=lambda msg: None)
    by_name = {r["loss"]: r["forward_backward_ms"]["median"] for r in rows}
    assert by_name["ifqa-eot"] > by_name["ifqa"]  # four transformed copies per image
