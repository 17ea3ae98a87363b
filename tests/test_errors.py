from __future__ import annotations

import pytest
from hydra.errors import InstantiationException

from radio_curation.errors import USER_ERROR_EXIT, RadioCurationError, exit_on_user_error, instantiate_user


def _raise_user_error(**kwargs):
    raise RadioCurationError("checkpoint /models/x.ckpt does not exist")


def test_user_error_wrapped_by_hydra_is_one_message_and_exit_2(capsys):
    with pytest.raises(SystemExit) as exited, exit_on_user_error():
        try:
            _raise_user_error()
        except RadioCurationError as err:
            raise InstantiationException("Error in call to target") from err
    assert exited.value.code == USER_ERROR_EXIT
    assert capsys.readouterr().err == "error: checkpoint /models/x.ckpt does not exist\n"


def test_other_errors_pass_through():
    with pytest.raises(InstantiationException), exit_on_user_error():
        raise InstantiationException("a bug, not a user mistake")
    with pytest.raises(ValueError), exit_on_user_error():
        raise ValueError("a bug")


def test_instantiate_user_raises_the_factory_message():
    with pytest.raises(RadioCurationError, match="does not exist"):
        instantiate_user({"_target_": "tests.test_errors._raise_user_error"})
