import pytest
import torch


@pytest.fixture(autouse=True, scope="package")
def one_thread():
    """The learned-rounding tests are small problems: one thread, as their timings were measured."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
