"""The published numbers shipped with the package: they load, name their sources, match the shared data
folder, cover every model config that has a published row, and compare with our rows correctly."""

import pandas as pd
import pytest
import result_fixtures as fx
from conftest import SHARED_DATA

from rwkvbench import reference
from rwkvbench.config import load_option, options

# Configs of conf/model/ with no published row, and why (also listed in rwkvbench/reference/README.md).
NOT_PUBLISHED = {"rwkv4_tiny": "random test model", "neox_tiny": "random test model",
                 "rwkv4": "any RWKV-4 checkpoint by path", "hf": "any transformers model by path"}


def test_reference_loads_with_sources():
    ref = reference.load_reference()
    assert list(ref.columns) == reference.COLUMNS
    assert set(ref.source) == {reference.PAPER, reference.PYTHIA_EVALS}
    assert ref.citation.str.len().gt(10).all()
    paper = ref[ref.source == reference.PAPER]
    assert paper.citation.str.startswith("RWKV paper arXiv:2305.13048v1 Appendix H Table").all()
    assert ref[ref.source == reference.PYTHIA_EVALS].citation.str.startswith("EleutherAI/pythia evals/").all()
    acc = ref[ref.metric.isin(["acc", "acc_norm", "em"])]
    assert acc.value.between(0, 1).all()
    assert (ref[ref.metric == "perplexity"].value > 1).all()
    assert paper.stderr.isna().all() and ref[ref.source == reference.PYTHIA_EVALS].stderr.notna().all()
    assert ref.n_params.between(5e7, 3e10).all()
    readme = (reference.HERE / "README.md").read_text()
    assert "arXiv:2305.13048" in readme and "EleutherAI/pythia" in readme


def test_every_config_with_published_numbers_is_covered():
    cov = reference.coverage()
    configs = set(options("model"))
    assert set(NOT_PUBLISHED) <= configs
    assert set(cov) == configs - set(NOT_PUBLISHED), "configs with and without published rows changed"
    for name in configs - set(NOT_PUBLISHED):
        assert reference.PAPER in cov[name], name
        if load_option("model", name).family == "hf":  # every Pythia config: EleutherAI's own numbers too
            assert reference.PYTHIA_EVALS in cov[name], name
    readme = (reference.HERE / "README.md").read_text()
    assert all(f"`{name}`" in readme for name in NOT_PUBLISHED)


def test_deduped_and_unmatched_models_have_no_config():
    ref = reference.load_reference()
    assert ref[ref.deduped].config.isna().all()
    assert ref[ref.model.isin(["GPT-Neo", "GPT-J", "GPT-NeoX", "pythia-70m", "pythia-1b-bf16"])].config.isna().all()
    evals = ref[(ref.source == reference.PYTHIA_EVALS) & (ref.config == "pythia_160m") & (ref.task == "lambada_openai")
                & (ref.metric == "perplexity")]
    assert evals.value.iloc[0] == pytest.approx(38.06, abs=0.01)  # the README's example of the disagreement


@pytest.mark.skipif(not (SHARED_DATA / "reference").is_dir(), reason="shared data folder not present")
@pytest.mark.parametrize("name", ["rwkv_paper_v1_zero_shot.csv", "pythia_v1_zero_shot.csv"])
def test_package_copy_equals_the_shared_data(name):
    assert (reference.HERE / name).read_bytes() == (SHARED_DATA / "reference" / name).read_bytes()


def test_task_info():
    assert reference.task_info("hellaswag") == {"label": "HellaSwag", "paper_metric": "acc_norm", "chance": 0.25}
    assert reference.task_info("lambada_openai")["chance"] is None
    assert reference.task_info("my_task") == {"label": "my_task", "paper_metric": "acc", "chance": None}
    assert reference.task_order(["zzz", "piqa", "lambada_openai"]) == ["lambada_openai", "piqa", "zzz"]


def test_ours_minus_published():
    ours = pd.concat([fx.quality_rows(), fx.quality_rows(variants=("5-shot",))])
    comp = reference.compare_with_reference(ours)
    assert set(comp.variant) == {"0-shot"}  # the paper's numbers are zero-shot
    ref = reference.load_reference()
    for r in comp.itertuples():
        mine = ours[(ours.model == r.model) & (ours.task == r.task) & (ours.metric == r.metric)
                    & (ours.variant == "0-shot")].iloc[0]
        pub = ref[(ref.config == r.model) & (ref.task == r.task) & (ref.metric == r.metric) & (ref.source == r.source)]
        assert len(pub) == 1
        assert r.ours == mine.value and r.ours_stderr == mine.stderr and r.n == mine.n
        assert r.difference == pytest.approx(mine.value - pub.value.iloc[0])
        se = (mine.stderr ** 2 + (0 if pd.isna(pub.stderr.iloc[0]) else pub.stderr.iloc[0]) ** 2) ** 0.5
        assert r.z == pytest.approx(r.difference / se)
    both = comp[(comp.model == "pythia_160m") & (comp.task == "lambada_openai") & (comp.metric == "perplexity")]
    assert set(both.source) == {reference.PAPER, reference.PYTHIA_EVALS}
    assert comp[comp.model == "rwkv4_1b5"].source.eq(reference.PAPER).all()
    assert reference.compare_with_reference(fx.efficiency_rows()).empty
