from pathlib import Path

import pytest

from idspn_experiments.clevr.config import ClevrConfig
from idspn_experiments.clevr.data import dataset_dir
from idspn_experiments.engine.config import load_config


@pytest.fixture(scope="session", autouse=True)
def clevr_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every CLEVR test keeps generated data and caches in one session folder (not ~/.cache)."""
    path = tmp_path_factory.mktemp("idspn-data")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("IDSPN_DATA_DIR", str(path))
        yield path


@pytest.fixture(scope="session")
def smoke_clevr(clevr_data_dir: Path) -> Path:
    """The CLEVR_v1.0 folder of the smoke preset's generated data (16 train, 8 val scenes), made once."""
    return dataset_dir(load_config(ClevrConfig, "clevr-smoke"), progress=False)
