"""The jobs file of ``hydra/sweeper=jobs``: one override list per job, or a clear error."""

from __future__ import annotations

import pytest
from hydra.errors import HydraException

from hydra_plugins.sweeplab_jobs_sweeper.jobs_sweeper import read_jobs


def test_jobs_are_lists_of_overrides_or_one_line_each(tmp_path) -> None:
    path = tmp_path / "jobs.yaml"
    path.write_text(
        "- [augment=mixup, seed=0]\n"
        "- regime.optimizer.lr=0.1 'regime.runs=\"name=x seed=0,1\"'\n"
        "- ['eval.shift.corruptions=[]']\n"
    )
    assert read_jobs(path) == [
        ["augment=mixup", "seed=0"],
        ["regime.optimizer.lr=0.1", 'regime.runs="name=x seed=0,1"'],
        ["eval.shift.corruptions=[]"],
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[]\n", "expected a non-empty list of jobs"),
        ("- [augment=mixup]\n- [seed]\n", "job 2 is not a list of key=value overrides"),
        ("- {augment: mixup}\n", "job 1 is not a list of key=value overrides"),
        ("- [a=1\n", "cannot read it"),
    ],
)
def test_a_bad_jobs_file_names_itself_and_the_job(tmp_path, text, message) -> None:
    path = tmp_path / "jobs.yaml"
    path.write_text(text)
    with pytest.raises(HydraException, match=message) as error:
        read_jobs(path)
    assert str(path) in str(error.value)
