from compress.cliargs import comma_list


def test_comma_list_strips_items_and_drops_blanks():
    assert comma_list(" en-us, de,,cs ,") == ["en-us", "de", "cs"]
    assert comma_list("") == []
    assert comma_list(None) == []
    assert comma_list("out") == ["out"]


def test_run_and_distill_refuse_a_missing_cuda_device_before_any_work(tmp_path, capsys):
    import pytest
    import torch

    from compress.cli import main

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is visible here")
    assert main(["run", "--quick", "--workdir", str(tmp_path / "w"), "--device", "cuda"]) == 2
    assert "no CUDA device is visible" in capsys.readouterr().err
    assert not (tmp_path / "w").exists()
    out = tmp_path / "students"
    assert main(["distill", "--pseudo", str(tmp_path), "--out", str(out), "--device", "cuda:1"]) == 2
    assert "no CUDA device is visible" in capsys.readouterr().err
    assert not out.exists()
