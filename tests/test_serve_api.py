"""`likewise serve` end to end: every endpoint and every bad input, against a real uvicorn process
on 127.0.0.1, once with the embedded store and once with Milvus Lite (the same suite)."""

from __future__ import annotations

import json
import pickle
import signal

import numpy as np
import pytest

from _server import CLASSES, DIM, TOKEN, Server, gallery_embeddings, make_model, png
from _server import axis_vector as axis

STORES = ["embedded", "milvus"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_model(tmp_path_factory.mktemp("serve-model") / "model")


@pytest.fixture(scope="module", params=STORES)
def server(request, model_dir, tmp_path_factory):
    if request.param == "milvus":
        store = f"milvus:{tmp_path_factory.mktemp('milvus') / 'gallery.db'}"
    else:
        store = str(tmp_path_factory.mktemp("embedded") / "store")
    srv = Server(model_dir, store, "--max-body-mb", "0.25").start()
    yield srv
    assert srv.stop() in (0, -signal.SIGTERM)  # uvicorn re-raises SIGTERM after its clean shutdown


@pytest.fixture(scope="module")
def client(server):
    with server.client() as c:
        yield c


@pytest.fixture(scope="module")
def exported(model_dir):
    from likewise.export import load

    return load(model_dir)


def unit(v):
    v = np.asarray(v, np.float64)
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def post(client, path, body):
    return client.post(path, json=body)


def raw_post(client, path, text, content_type="application/json"):
    return client.post(path, content=text, headers={"Content-Type": content_type})


# ----------------------------------------------------------------------------- token, health


def test_health_is_public_and_everything_else_needs_the_token(server):
    with server.client(token=None) as anon, server.client(token="wrong") as wrong:
        assert anon.get("/health").json() == {"status": "ok"}
        for method, path in [("GET", "/stats"), ("GET", "/metrics"), ("GET", "/docs"), ("POST", "/search")]:
            for c in (anon, wrong):
                r = c.request(method, path, json={"embeddings": [axis(0)]} if method == "POST" else None)
                assert r.status_code == 401, (method, path)
                assert r.json() == {"detail": "missing or wrong bearer token"}
                assert r.headers["www-authenticate"] == "Bearer"
        # a token that only starts right is wrong too
        bad = anon.get("/stats", headers={"Authorization": f"Bearer {TOKEN}x"})
        assert bad.status_code == 401


# ----------------------------------------------------------------------------- embed


def test_embed_images_vectors_and_embeddings_as_the_model_does(client, exported):
    from PIL import Image

    rng = np.random.default_rng(1)
    img = (rng.random((8, 8)) * 255).astype(np.uint8)
    big = (rng.random((16, 12)) * 255).astype(np.uint8)  # resized to 8x8 (bilinear)
    rgb = (rng.random((8, 8, 3)) * 255).astype(np.uint8)  # converted to grayscale
    vec = rng.random(64).astype(np.float32)
    emb = axis(2, 0.3)
    body = {
        "inputs": [
            {"image": png(img)},
            {"vector": vec.tolist()},
            {"embedding": emb},
            {"image": png(big)},
            {"image": png(rgb, "JPEG")},
        ]
    }
    r = post(client, "/embed", body)
    assert r.status_code == 200, r.text
    out = np.asarray(r.json()["embeddings"], np.float32)
    assert out.shape == (5, DIM)
    import io

    jpeg = Image.open(io.BytesIO(__import__("base64").b64decode(png(rgb, "JPEG")))).convert("L")
    expected_inputs = np.stack(
        [
            img / 255.0,
            vec.reshape(8, 8),
            np.asarray(Image.fromarray(big).resize((8, 8), Image.BILINEAR)) / 255.0,
            np.asarray(jpeg) / 255.0,
        ]
    ).astype(np.float32)[:, None]
    expected = exported.embed(expected_inputs)
    np.testing.assert_allclose(out[[0, 1, 3, 4]], expected, atol=1e-5)
    np.testing.assert_array_equal(out[2], np.float32(emb))


# ----------------------------------------------------------------------------- search, match, verify


def test_search_agrees_with_brute_force_over_the_gallery(client):
    emb, labels = gallery_embeddings()
    queries = [axis(0, 0.2, seed=5), axis(3, 0.2, seed=6)]
    r = post(client, "/search", {"embeddings": queries, "k": 5})
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    scores = unit(np.asarray(queries)) @ unit(emb).T
    for row, s in zip(results, scores):
        order = np.argsort(-s)[:5]
        assert [h["id"] for h in row] == order.tolist()
        np.testing.assert_allclose([h["score"] for h in row], s[order], atol=1e-5)
        assert [h["label"] for h in row] == labels[order].tolist()
        assert all(h["metadata"] is None for h in row)


def test_search_k_larger_than_the_gallery_returns_every_item(client):
    n = client.get("/stats").json()["items"]
    r = post(client, "/search", {"embeddings": [axis(1)], "k": 1000})
    assert r.status_code == 200
    assert len(r.json()["results"][0]) == n


def test_match_decides_as_the_saved_matcher(client, model_dir):
    from likewise.matching import Matcher

    matcher = Matcher.load(model_dir / "matcher")
    queries = [axis(0, 0.1, 1), axis(1, 0.1, 2), axis(2, 0.1, 3), axis(7), axis(5, 0.2, 4)]
    r = post(client, "/match", {"embeddings": queries})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["threshold"] == pytest.approx(matcher.threshold)
    expected = matcher.match(np.asarray(queries))
    got = body["matches"]
    assert [m["answer"] for m in got] == [e.answer for e in expected]
    assert [m["answer"] for m in got] == ["a", "b", "c", "unknown", "unknown"]
    assert [m["id"] for m in got] == [e.id for e in expected]
    np.testing.assert_allclose([m["score"] for m in got], [e.score for e in expected], atol=1e-5)
    assert got[3]["label"] is None


def test_match_at_a_target_false_accept_rate_recalibrates(client, model_dir):
    from likewise.matching import Matcher, calibrate

    saved = Matcher.load(model_dir / "matcher")
    emb, labels = gallery_embeddings()
    for far in (0.0, 0.3):
        expected = calibrate(saved.index, emb, labels, target="far", far=far, ids=saved.index.ids).threshold
        r = post(client, "/match", {"embeddings": [axis(0, 0.1, 1)], "far": far})
        assert r.status_code == 200, r.text
        assert r.json()["threshold"] == pytest.approx(expected, abs=1e-6)


def test_verify_uses_the_pair_threshold_of_the_gallery(client):
    from likewise.matching import calibrate_from_embeddings

    emb, labels = gallery_embeddings()
    threshold = calibrate_from_embeddings(unit(emb).astype(np.float32), labels, target="f1")
    a, b, c = axis(0, 0.1, 1), axis(0, 0.1, 2), axis(4)
    for x, y in [(a, b), (a, c)]:
        r = post(client, "/verify", {"a": {"embedding": x}, "b": {"embedding": y}})
        assert r.status_code == 200, r.text
        body = r.json()
        score = float(unit(np.asarray(x)) @ unit(np.asarray(y)))
        assert body["score"] == pytest.approx(score, abs=1e-6)
        assert body["threshold"] == pytest.approx(threshold, abs=1e-6)
        assert body["same"] == (score >= threshold)
    assert post(client, "/verify", {"a": {"embedding": a}, "b": {"embedding": b}}).json()["same"] is True


# ----------------------------------------------------------------------------- items


def test_items_add_search_delete(client):
    new = [
        {"label": "e", "embedding": axis(6), "metadata": {"name": "six", "n": [1, 2]}},
        {"id": 5000, "label": "e", "embedding": axis(6, 0.3, 9)},
        {"label": "f", "vector": np.linspace(0, 1, 64).tolist()},
    ]
    before = client.get("/stats").json()["items"]
    r = post(client, "/items", {"items": new})
    assert r.status_code == 200, r.text
    ids = r.json()["ids"]
    assert len(ids) == 3 and ids[1] == 5000 and len(set(ids)) == 3 and ids[0] >= len(CLASSES) * 10
    assert client.get("/stats").json()["items"] == before + 3
    hits = post(client, "/search", {"embeddings": [axis(6)], "k": 2}).json()["results"][0]
    assert [h["id"] for h in hits] == [ids[0], 5000]
    assert hits[0]["metadata"] == {"name": "six", "n": [1, 2]} and hits[0]["score"] == pytest.approx(1.0)
    assert post(client, "/match", {"embeddings": [axis(6)]}).json()["matches"][0]["answer"] == "e"
    # a used id, a repeated id, a label of the other kind: 409, nothing written
    for items, match in [
        ([{"id": 5000, "label": "e", "embedding": axis(6)}], "already in the gallery"),
        ([{"id": 7, "label": "e", "embedding": axis(6)}] * 2, "appears twice"),
        ([{"label": 3, "embedding": axis(6)}], "labels are integers but the gallery holds strings"),
    ]:
        r = post(client, "/items", {"items": items})
        assert r.status_code == 409 and match in r.json()["detail"], r.text
    assert client.get("/stats").json()["items"] == before + 3
    # delete: 200, then 404; the item is gone from search
    assert client.delete("/items/5000").json() == {"deleted": 5000}
    r = client.delete("/items/5000")
    assert r.status_code == 404 and r.json() == {"detail": "no item with id 5000"}
    assert client.delete("/items/999999").status_code == 404
    assert client.delete("/items/-1").status_code == 422
    assert client.delete("/items/abc").status_code == 422
    hits = post(client, "/search", {"embeddings": [axis(6)], "k": 3}).json()["results"][0]
    assert 5000 not in [h["id"] for h in hits]
    assert client.get("/stats").json()["items"] == before + 2


# ----------------------------------------------------------------------------- bad input

NAN_BODIES = [
    ('{"embeddings": [[1, 0, 0, 0, 0, 0, 0, NaN]]}', "finite number"),
    ('{"embeddings": [[1, 0, 0, 0, 0, 0, 0, Infinity]]}', "finite number"),
    ('{"embeddings": [[1, 0, 0, 0, 0, 0, 0, -Infinity]]}', "finite number"),
    ('{"inputs": [{"vector": [NaN' + ", 0" * 63 + "]}]}", "finite number"),
    ('{"embeddings": [[1e39, 0, 0, 0, 0, 0, 0, 0]]}', "beyond the float32 range"),
]


@pytest.mark.parametrize("text, match", NAN_BODIES)
def test_nan_and_inf_in_raw_json_are_refused(client, text, match):
    r = raw_post(client, "/search", text)
    assert r.status_code == 422 and match in r.json()["detail"], r.text


def test_nan_in_metadata_is_refused(client):
    text = '{"items": [{"label": "x", "embedding": [1, 0, 0, 0, 0, 0, 0, 0], "metadata": {"w": NaN}}]}'
    r = raw_post(client, "/items", text)
    assert r.status_code == 422 and "metadata must not contain NaN" in r.json()["detail"]


BAD = [
    ("/search", {"embeddings": [axis(0)[:7]]}, "embeddings[0] has 7 values but the model's embedding has 8"),
    ("/embed", {"inputs": [{"vector": [0.5] * 63}]}, "inputs[0].vector has 63 values but the model's input"),
    ("/search", {"inputs": [{"embedding": [1.0] * 9}]}, "inputs[0].embedding has 9 values"),
    ("/embed", {"inputs": []}, "inputs: List should have at least 1 item"),
    ("/search", {"embeddings": []}, "embeddings: List should have at least 1 item"),
    ("/search", {"embeddings": [[]]}, "embeddings[0]: List should have at least 1 item"),
    ("/items", {"items": []}, "items: List should have at least 1 item"),
    ("/search", {"embeddings": [axis(0)], "colour": "red"}, "colour: Extra inputs are not permitted"),
    ("/embed", {"inputs": [{"embedding": axis(0), "x": 1}]}, "inputs[0].x: Extra inputs are not permitted"),
    ("/search", {"embeddings": [axis(0)], "k": 0}, "k: Input should be greater than or equal to 1"),
    ("/search", {"embeddings": [axis(0)], "k": -3}, "k: Input should be greater than or equal to 1"),
    ("/search", {"embeddings": [axis(0)], "k": 10**12}, "k: Input should be less than or equal to 1000"),
    ("/search", {"embeddings": [axis(0)], "k": 2.5}, "k: Input should be a valid integer"),
    ("/search", {"embeddings": [axis(0)], "k": "5"}, "k: Input should be a valid integer"),
    ("/search", {"embeddings": [["1"] * 8]}, "embeddings[0][0]: Input should be a valid number"),
    ("/search", {"k": 3}, "give exactly one of 'inputs' and 'embeddings'"),
    ("/search", {"embeddings": [axis(0)], "inputs": [{"embedding": axis(0)}]}, "exactly one of 'inputs'"),
    ("/embed", {"inputs": [{}]}, "an input is exactly one of"),
    ("/embed", {"inputs": [{"embedding": axis(0), "vector": [0.0] * 64}]}, "got vector, embedding"),
    ("/embed", {"inputs": [{"image": "not base64!"}]}, "inputs[0].image is not valid base64"),
    ("/embed", {"inputs": [{"image": "aGVsbG8gd29ybGQ="}]}, "inputs[0].image could not be decoded as PNG"),
    ("/match", {"embeddings": [axis(0)], "far": 1.5}, "far: Input should be less than or equal to 1"),
    ("/verify", {"a": {"embedding": axis(0)}}, "b: Field required"),
    ("/items", {"items": [{"embedding": axis(0)}]}, "items[0].label: Field required"),
    ("/items", {"items": [{"label": "a", "embedding": axis(0), "id": -2}]}, "greater than or equal to 0"),
    ("/items", {"items": [{"label": "", "embedding": axis(0)}]}, "at least 1 character"),
]


@pytest.mark.parametrize("path, body, match", BAD, ids=[m for _, _, m in BAD])
def test_bad_input_is_a_422_naming_the_problem(client, path, body, match):
    r = post(client, path, body)
    assert r.status_code == 422, r.text
    assert match in r.json()["detail"]


def test_undecodable_and_oversized_images(client):
    gif = __import__("base64").b64encode(b"GIF89a" + b"\0" * 30).decode()
    r = post(client, "/embed", {"inputs": [{"image": gif}]})
    assert r.status_code == 422 and "could not be decoded as PNG or JPEG" in r.json()["detail"]
    huge = png(np.zeros((4097, 4097), np.uint8))  # compresses to a few kB; 16.8 M pixels
    r = post(client, "/embed", {"inputs": [{"embedding": axis(0)}, {"image": huge}]})
    assert r.status_code == 422, r.text
    assert r.json()["detail"] == ("inputs[1].image is 4097x4097 pixels; at most 16777216 pixels are accepted")


def test_body_over_the_limit_is_413(client):
    text = json.dumps({"embeddings": [axis(0)] * 7000})  # ~ 0.3 MB > --max-body-mb 0.25
    assert len(text) > 0.25 * 2**20
    r = raw_post(client, "/search", text)
    assert r.status_code == 413 and "limit is 262144" in r.json()["detail"]

    def chunks():  # no Content-Length: counted while received
        for _ in range(40):
            yield b" " * 8192

    r = client.post("/search", content=chunks(), headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and "over the limit of 262144 bytes" in r.json()["detail"]


def test_pickle_and_other_non_json_bodies(client):
    blob = pickle.dumps({"embeddings": [axis(0)]})
    r = raw_post(client, "/search", blob, "application/octet-stream")
    assert r.status_code == 415
    assert r.json()["detail"] == (
        "the body must be JSON (Content-Type: application/json), got application/octet-stream"
    )
    r = raw_post(client, "/search", blob)  # a pickle labelled as JSON
    assert r.status_code == 422 and r.json()["detail"].startswith("the body is not valid JSON")
    r = raw_post(client, "/search", "embeddings=1", "application/x-www-form-urlencoded")
    assert r.status_code == 415
    r = raw_post(client, "/search", "[1, 2, 3]")
    assert r.status_code == 422
    r = raw_post(client, "/search", "")
    assert r.status_code == 422


def test_the_server_keeps_serving_and_counts_it(client):
    assert client.get("/health").json() == {"status": "ok"}
    r = post(client, "/search", {"embeddings": [axis(0)], "k": 1})
    assert r.status_code == 200 and r.json()["results"][0][0]["label"] == "a"
    stats = client.get("/stats").json()
    assert stats["dim"] == DIM and stats["metric"] == "cosine" and "convnet" in stats["model"]
    assert stats["uptime_s"] > 0
    assert stats["requests"]["/search"]["422"] >= 10 and stats["requests"]["/search"]["413"] == 2
    assert stats["requests"]["/search"]["200"] >= 3
    lat = stats["latency_ms"]["/search"]
    assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"] and lat["n"] >= 15
    metrics = client.get("/metrics")
    assert metrics.status_code == 200 and metrics.headers["content-type"].startswith("text/plain")
    text = metrics.text
    assert 'likewise_requests_total{route="/search",status="422"}' in text
    assert f"likewise_gallery_items {float(stats['items'])}" in text
    assert 'likewise_request_seconds_bucket{le="0.001",route="/search"}' in text


def test_openapi_lists_every_route(client):
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/embed", "/search", "/match", "/verify", "/items", "/items/{item_id}", "/health"} <= set(paths)
