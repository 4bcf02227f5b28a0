"""Random Cut Forests through a Host and a real server on 127.0.0.1 (boto3, tritonclient):
answers shaped as SageMaker's RCF, scores equal to ``krcf``'s (rtol 1e-6: the answer is
float32), damaged artifacts a 424 naming the model while the others keep serving; the family's
slots read back unchanged after demotion."""

from __future__ import annotations

import json

import httpx
import numpy as np
import pytest
import safetensors.numpy
import torch
import tritonclient.http as v2client
from botocore.exceptions import ClientError
from conftest import runtime_client

from mmhost.convert import from_rcf
from mmhost.families.rcf import RcfFamily, compile_rcf, rcf_slot_bytes

krcf = pytest.importorskip("krcf")
D = 4


def forest(seed: int, trees: int = 20, samples: int = 64):
    rng = np.random.default_rng(seed)
    f = krcf.RandomCutForest(
        {
            "dimensions": D,
            "shingle_size": 1,
            "num_trees": trees,
            "sample_size": samples,
            "output_after": 1,
            "random_seed": seed,
        }
    )
    x = rng.normal(size=(300, D))
    for row in x.tolist():
        f.update(row)
    return f, x


@pytest.fixture
def server(serve, store):
    forests = {}
    for i in range(3):
        f, x = forest(i)
        from_rcf(f).save(store / "rcf" / f"s{i}" / "model.tar.gz")
        forests[f"rcf/s{i}/model.tar.gz"] = (f, x)
    s = serve(store=str(store))
    s.forests = forests
    return s


def rows(seed: int, x: np.ndarray) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.normal(size=(6, D)), x[:2], 40 * rng.normal(size=(2, D))])


def csv_body(q: np.ndarray) -> bytes:
    return "".join(",".join(map(repr, r)) + "\n" for r in q.tolist()).encode()


def want(f, q: np.ndarray) -> np.ndarray:
    return np.array([f.score(r.tolist()) for r in q])


def test_boto3_answers_as_sagemakers_rcf(server):
    client = runtime_client(server.url)
    for name, (f, x) in server.forests.items():
        q = rows(1, x)
        reply = client.invoke_endpoint(
            EndpointName="mmhost",
            TargetModel=name,
            ContentType="text/csv",
            Accept="application/json",
            Body=csv_body(q),
        )
        doc = json.loads(reply["Body"].read())
        assert list(doc) == ["scores"]
        np.testing.assert_allclose([s["score"] for s in doc["scores"]], want(f, q), rtol=1e-6)
        lines = client.invoke_endpoint(
            EndpointName="mmhost",
            TargetModel=name,
            ContentType="text/csv",
            Accept="application/jsonlines",
            Body=csv_body(q),
        )["Body"].read()
        got = [json.loads(v)["score"] for v in lines.splitlines()]
        np.testing.assert_allclose(got, want(f, q), rtol=1e-6)


def test_csv_and_v2_answers(server):
    name = "rcf/s1/model.tar.gz"
    f, x = server.forests[name]
    q = rows(2, x)
    head = {"X-Amzn-SageMaker-Target-Model": name, "Content-Type": "text/csv", "Accept": "text/csv"}
    text = httpx.post(f"{server.url}/invocations", content=csv_body(q), headers=head).text
    np.testing.assert_allclose([float(v) for v in text.splitlines()], want(f, q), rtol=1e-6)
    client = v2client.InferenceServerClient(server.url.removeprefix("http://"))
    inp = v2client.InferInput("x", list(q.shape), "FP32")
    inp.set_data_from_numpy(q.astype(np.float32), binary_data=True)
    res = client.infer(name, [inp])
    np.testing.assert_allclose(res.as_numpy("score"), want(f, q.astype(np.float32)), rtol=1e-6)


def _damage(store, name: str, change) -> None:
    f, _ = forest(9, trees=3, samples=16)
    folder = store / "bad" / name
    from_rcf(f).save(folder)
    params = safetensors.numpy.load_file(folder / "params.safetensors")
    change(params)
    safetensors.numpy.save_file(params, folder / "params.safetensors")


def _cycle(p):
    p["rcf.left"][int(np.flatnonzero(p["rcf.left"][1:] >= 0)[0]) + 1] = 0


DAMAGE = {
    "cycle": _cycle,
    "child": lambda p: p["rcf.right"].__setitem__(0, 1e6),
    "mass": lambda p: p["rcf.mass"].__setitem__(0, p["rcf.mass"][0] + 2),
    "nan": lambda p: p["rcf.cut"].__setitem__(0, np.nan),
    "sizes": lambda p: p["rcf.tree_nodes"].__setitem__((-1, 1), p["rcf.tree_nodes"][-1, 1] + 9),
}


@pytest.mark.parametrize("case", list(DAMAGE))
def test_a_damaged_forest_is_a_424_naming_it_and_others_keep_serving(server, store, case):
    _damage(store, case, DAMAGE[case])
    client = runtime_client(server.url)
    with pytest.raises(ClientError) as err:
        client.invoke_endpoint(
            EndpointName="mmhost",
            TargetModel=f"bad/{case}",
            ContentType="text/csv",
            Body=b"0,0,0,0\n",
        )
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 424
    assert f"bad/{case}" in err.value.response["Error"]["Message"]
    good = "rcf/s0/model.tar.gz"
    reply = client.invoke_endpoint(
        EndpointName="mmhost", TargetModel=good, ContentType="text/csv", Body=b"0,0,0,0\n"
    )
    assert len(json.loads(reply["Body"].read())["scores"]) == 1


def test_slots_read_back_unchanged_and_bytes_are_exact():
    f, _ = forest(0, trees=10, samples=32)
    model = compile_rcf(from_rcf(f))
    fam = RcfFamily(torch.device("cpu"))
    c, t, d = model.slab_key
    assert fam.slot_bytes(model) == rcf_slot_bytes(c, t, d) == c * (28 + 8 * d) + 16 * t + 16
    slab, slot = fam.place(model)
    back = fam.read_back(slab, slot, model.stripped())
    for field in ("nodes", "mass", "box", "range_sum", "tree_root", "tree_mass"):
        np.testing.assert_array_equal(getattr(back, field), getattr(model, field))
    fam.free(slab, slot)
    assert fam.stats()["models"] == 0


def test_demoted_and_promoted_forests_score_the_same(host_factory, store):
    fs = {}
    for i in range(5):
        f, x = forest(20 + i, trees=10, samples=32)
        from_rcf(f).save(store / f"f{i}.tar.gz")
        fs[f"f{i}.tar.gz"] = (f, x)
    one = RcfFamily(torch.device("cpu")).slot_bytes(compile_rcf(from_rcf(fs["f0.tar.gz"][0])))
    host = host_factory(store=str(store), device_budget=2 * one)
    for _ in range(2):
        for name, (f, x) in fs.items():
            q = rows(3, x)
            np.testing.assert_allclose(host.predict(name, q), want(f, q), rtol=1e-6)
    assert host.stats()["evictions"]["device"] > 0
