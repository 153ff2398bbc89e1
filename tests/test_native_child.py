"""Native code in a child process (text2sql.runtime.native): a child that really crashes (a NULL
read in C, through ctypes) becomes a clear error in this process, which goes on."""

from __future__ import annotations

import os
import signal

import pytest

from text2sql.io import DataError
from text2sql.runtime.native import ChildWorker, NativeCrash, describe_exit


def test_a_crash_while_loading_names_the_work_and_the_signal(capfd):
    with pytest.raises(NativeCrash) as e:
        ChildWorker("ctypes:string_at", what="reading address 0", ptr=0)
    message = str(e.value)
    assert message.startswith("reading address 0: the child process ")
    assert "killed by signal SIGSEGV (Segmentation fault) while loading" in message
    # faulthandler in the child printed where it died
    assert "Fatal Python error: Segmentation fault" in capfd.readouterr().err


def test_a_crash_in_a_call_is_an_error_and_this_process_goes_on(capfd):
    child = ChildWorker("importlib:import_module", what="ctypes in a child", name="ctypes")
    assert child.call("string_at", b"abc", 2) == b"ab"  # a call that works
    with pytest.raises(NativeCrash, match=r"SIGSEGV .* while running string_at"):
        child.call("string_at", 0)
    assert "Fatal Python error: Segmentation fault" in capfd.readouterr().err
    with pytest.raises(RuntimeError, match="was closed"):
        child.call("string_at", b"abc")
    # a new child works: nothing in this process was damaged
    with ChildWorker("importlib:import_module", what="ctypes", name="ctypes") as again:
        assert again.call("string_at", b"xyz", 1) == b"x"


def test_errors_raised_in_the_child_come_back_and_the_child_lives_on(tmp_path):
    with pytest.raises(DataError, match="not a GGUF file"):
        ChildWorker("text2sql.inference.llama_cpp:check_gguf_path", what="a path check",
                    path=str(tmp_path / "model.bin"))
    with ChildWorker("importlib:import_module", what="json", name="json") as child:
        with pytest.raises(RuntimeError, match=r"(?s)Expecting value.*in the child process"):
            child.call("loads", "not json")
        assert child.call("loads", "[1, 2]") == [1, 2]
    with ChildWorker("importlib:import_module", what="backend", name="text2sql.inference.llama_cpp"
                     ) as child:
        with pytest.raises(DataError, match="model.bin: not a GGUF file"):
            child.call("check_gguf_path", str(tmp_path / "model.bin"))


def test_an_exit_and_a_kill_are_told_apart():
    assert describe_exit(-signal.SIGSEGV) == "killed by signal SIGSEGV (Segmentation fault)"
    assert describe_exit(-signal.SIGKILL) == "killed by signal SIGKILL (Killed)"
    assert describe_exit(3) == "exited with status 3"
    child = ChildWorker("importlib:import_module", what="os in a child", name="os")
    with pytest.raises(NativeCrash, match="exited with status 7 while running _exit"):
        child.call("_exit", 7)


def test_what_the_child_prints_does_not_reach_this_process_stdout(capfd):
    with ChildWorker("importlib:import_module", what="os", name="os") as child:
        child.call("write", 1, b"native chatter\n")
    out, err = capfd.readouterr()
    assert "native chatter" not in out and "native chatter" in err


def test_a_killed_child_is_reported_even_between_calls():
    child = ChildWorker("importlib:import_module", what="sleeping child", name="time")
    os.kill(child.pid, signal.SIGSEGV)
    with pytest.raises(NativeCrash, match="SIGSEGV"):
        child.call("sleep", 0)
