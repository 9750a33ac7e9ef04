"""Checkpoints (DESIGN.md §3-§4): atomic writes that survive SIGKILL, a format
version, validation of everything before anything changes, refusal of
truncated and foreign files, and exact resume in a new process for every
optimizer, with schedules (plateau, 1cycle) and EMA where available.
"""
import io
import json
import os
import re
import signal
import stat
import subprocess
import sys
import time
import zipfile

import numpy as np
import pytest

import fastopt as fo
from fastopt import checkpoint, schedules

import ckpt_worker
from robust_util import (TALLY, add_zeros_member, assert_unchanged, npy_header, rebuild_npz,
                         snapshot, traced_peak)

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ckpt_worker.py")
CONFIGS = ckpt_worker.configurations()


def _state_image(opt, params):
    """Params, state arrays, counters and schedule state, bit for bit."""
    sd = opt.state_dict()
    return ([p.tobytes() for p in params],
            [[a.tobytes() for a in s] for s in sd["state"]],
            sd["iterations"], sd["steps"].tolist(), json.dumps(sd["schedules"], sort_keys=True))


def _worker_env():
    env = dict(os.environ)
    # the child imports the same fastopt as this process (installed, or PYTHONPATH)
    env["PYTHONPATH"] = os.pathsep.join(
        [os.path.dirname(os.path.dirname(fo.__file__))] +
        [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    return env


@pytest.fixture(scope="module")
def resumed_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("resume")
    out = subprocess.run([sys.executable, WORKER, "resume", str(d), "5"], cwd=str(d),
                         env=_worker_env(), capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return d


@pytest.mark.parametrize("cid", sorted(CONFIGS))
def test_resume_in_a_new_process_is_bit_exact(cid, resumed_dir):
    """N steps straight == k steps + save (another process) + load + N-k steps."""
    cfg = CONFIGS[cid]
    k, n = 5, ckpt_worker.NSTEPS
    straight, p_straight, plateau = ckpt_worker.build(*cfg)
    ckpt_worker.run(straight, p_straight, plateau, 0, n)

    resumed, p_resumed, plateau_r = ckpt_worker.build(*cfg)
    for p in p_resumed:
        p[...] = 7.0   # the checkpoint must bring the params back too
    fo.load(resumed_dir / f"{cid}.npz", resumed)
    assert resumed.iterations == k
    ckpt_worker.run(resumed, p_resumed, plateau_r, k, n)
    assert _state_image(straight, p_straight) == _state_image(resumed, p_resumed), cid
    if plateau is not None:
        assert plateau.state_dict() == plateau_r.state_dict()
        assert plateau.num_reports == n
    TALLY["resumes_exact"] += 1


def test_configurations_cover_the_registry():
    names = {c[0] for c in CONFIGS.values()}
    assert names == set(ckpt_worker.REGISTRY)
    assert {c[2] for c in CONFIGS.values()} >= {"const", "plateau", "onecycle", "groups"}


def test_plateau_reductions_happen_in_the_resume_scenario():
    # the scenario must actually move the plateau scale, or the resume test proves little
    opt, params, plateau = ckpt_worker.build("SGD", "keras", "plateau")
    ckpt_worker.run(opt, params, plateau, 0, ckpt_worker.NSTEPS)
    assert plateau.num_reductions >= 1 and plateau.scale < 1


# ---- atomic writes under SIGKILL -----------------------------------------------------

def test_sigkill_mid_write_leaves_a_valid_checkpoint(tmp_path):
    """A writer saving a 32 MB checkpoint in a loop is killed at random moments;
    the file always loads and is one of the versions written (w == iterations)."""
    path = tmp_path / "ck.npz"
    n = 8 * 1024 * 1024
    w = np.zeros(n, dtype=np.float32)
    opt = fo.SGD([w], learning_rate=1.0)
    fo.save(path, opt)                  # version 0: the old file
    rng = np.random.default_rng(99)
    kills = 0
    for round_ in range(5):
        proc = subprocess.Popen([sys.executable, WORKER, "writer", str(path), str(n)],
                                cwd=str(tmp_path), env=_worker_env(),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            # wait until it is writing (first version done), then kill at a random moment
            first = proc.stdout.readline()
            assert first.strip().isdigit(), proc.stderr.read()
            time.sleep(float(rng.uniform(0.0, 0.4)))
            proc.send_signal(signal.SIGKILL)
            rest = proc.stdout.read()
        finally:
            proc.kill()
            proc.wait(timeout=30)
            proc.stdout.close()
            proc.stderr.close()
        assert proc.returncode == -signal.SIGKILL
        kills += 1
        done = [int(first)] + [int(x) for x in rest.split()]
        fresh_w = np.full(n, -5.0, dtype=np.float32)
        fresh = fo.SGD([fresh_w], learning_rate=1.0)
        fo.load(path, fresh)
        it = fresh.iterations
        # the last completed save, or the one whose rename landed just before the kill
        assert it in (done[-1], done[-1] + 1), (it, done[-3:])
        assert (fresh_w == np.float32(it)).all()
        TALLY["sigkill_survived"] += 1
    assert kills == 5
    leftovers = [f for f in os.listdir(tmp_path) if f.startswith(".fastopt-")]
    TALLY["temp_files_left_by_sigkill"] += len(leftovers)
    for f in leftovers:         # a killed writer may leave its temp file; never the target
        assert f.endswith(".tmp")


def test_failed_write_leaves_old_file_and_no_temp(tmp_path, monkeypatch):
    path = tmp_path / "ck.npz"
    w = np.ones(3)
    opt = fo.SGD([w], momentum=0.5)
    fo.save(path, opt)
    old = path.read_bytes()
    opt.step([np.ones(3)])

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint.np, "savez", boom)
    with pytest.raises(OSError, match="disk full"):
        fo.save(path, opt)
    assert path.read_bytes() == old
    assert sorted(os.listdir(tmp_path)) == ["ck.npz"]


# ---- validation on load: refuse, name the problem, change nothing -------------------

def _trained(tmp_path, cls=fo.Adam, shapes=((4, 3), (5,)), **kw):
    params = [np.linspace(-1, 1, int(np.prod(s))).reshape(s) for s in shapes]
    opt = cls(params, **kw)
    for k in range(3):
        opt.step([np.full(p.shape, 0.1 * (k + 1)) for p in params])
    return opt, params


def _refuse(path, opt, params, pattern, exc=ValueError):
    before = snapshot(opt, params)
    with pytest.raises(exc, match=pattern):
        fo.load(path, opt)
    assert_unchanged(before, opt, params, f"load {path}")
    TALLY["inputs_tried"] += 1
    TALLY["failures_survived"] += 1


def _rewrite(src, dst, edit_meta=None, edit_arrays=None):
    """Copy a checkpoint, editing its metadata and/or arrays (a crafted foreign file)."""
    with np.load(src) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(arrays.pop(checkpoint._META).tobytes().decode())
    if edit_meta:
        edit_meta(meta)
    if edit_arrays:
        edit_arrays(arrays)
    arrays[checkpoint._META] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    np.savez(dst, **arrays)
    return dst


def test_checkpoint_carries_a_format_version(tmp_path):
    opt, params = _trained(tmp_path)
    fo.save(tmp_path / "a.npz", opt)
    with np.load(tmp_path / "a.npz") as z:
        meta = json.loads(z[checkpoint._META].tobytes().decode())
    assert meta["checkpoint_version"] == checkpoint.FORMAT_VERSION
    assert meta["format_version"] == 1 and meta["class"] == "Adam"


def test_truncated_files_refused_and_nothing_changes(tmp_path):
    src_opt, _ = _trained(tmp_path)
    fo.save(tmp_path / "good.npz", src_opt)
    data = (tmp_path / "good.npz").read_bytes()
    opt, params = _trained(tmp_path)
    opt.step([np.ones((4, 3)), np.ones(5)])   # differs from the file
    cuts = sorted({0, 1, 3, 4, 30, 100, len(data) // 3, len(data) // 2, len(data) - 22,
                   len(data) - 1})
    for cut in cuts:
        p = tmp_path / f"cut{cut}.npz"
        p.write_bytes(data[:cut])
        _refuse(p, opt, params, r"cut%d\.npz: .*(not a fastopt checkpoint|truncated|corrupt)" % cut)


def test_corrupted_bytes_refused(tmp_path):
    src_opt, _ = _trained(tmp_path)
    fo.save(tmp_path / "good.npz", src_opt)
    data = bytearray((tmp_path / "good.npz").read_bytes())
    opt, params = _trained(tmp_path)
    opt.step([np.ones((4, 3)), np.ones(5)])
    rng = np.random.default_rng(5)
    # flip bytes inside array payloads: the zip CRC catches them
    with zipfile.ZipFile(tmp_path / "good.npz") as z:
        infos = [i for i in z.infolist() if i.file_size > 100]
    for k, info in enumerate(infos):
        bad = bytearray(data)
        pos = info.header_offset + 30 + len(info.filename) + info.extra.__len__() + \
            int(rng.integers(80, info.file_size))
        bad[pos] ^= 0xFF
        p = tmp_path / f"flip{k}.npz"
        p.write_bytes(bytes(bad))
        _refuse(p, opt, params, r"unreadable or truncated|corrupt|CRC")


def test_foreign_files_refused(tmp_path):
    opt, params = _trained(tmp_path)
    foreign = {
        "empty.npz": b"",
        "text.npz": b"hello, this is not a checkpoint\n",
        "random.npz": np.random.default_rng(1).integers(0, 256, 5000, dtype=np.uint8).tobytes(),
    }
    for name, blob in foreign.items():
        (tmp_path / name).write_bytes(blob)
        _refuse(tmp_path / name, opt, params, "not a fastopt checkpoint|truncated")
    np.savez(tmp_path / "plain.npz", a=np.ones(3), b=np.zeros(2))
    _refuse(tmp_path / "plain.npz", opt, params, "no metadata")
    np.save(tmp_path / "single.npy", np.ones(3))
    _refuse(tmp_path / "single.npy", opt, params, "not a fastopt checkpoint")
    np.savez(tmp_path / "pickled.npz", **{checkpoint._META: np.array([{"a": 1}], dtype=object)})
    _refuse(tmp_path / "pickled.npz", opt, params, "unreadable|corrupt")
    with zipfile.ZipFile(tmp_path / "zip.npz", "w") as z:
        z.writestr("readme.txt", "just a zip")
    _refuse(tmp_path / "zip.npz", opt, params, "not a fastopt checkpoint|no metadata")
    np.savez(tmp_path / "notjson.npz",
             **{checkpoint._META: np.frombuffer(b"{not json", dtype=np.uint8)})
    _refuse(tmp_path / "notjson.npz", opt, params, "corrupt checkpoint metadata")
    np.savez(tmp_path / "list.npz", **{checkpoint._META: np.frombuffer(b"[1, 2]", dtype=np.uint8)})
    _refuse(tmp_path / "list.npz", opt, params, "corrupt checkpoint metadata")
    with pytest.raises(FileNotFoundError):
        fo.load(tmp_path / "missing.npz", opt)


def test_mismatched_checkpoints_refused(tmp_path):
    """Class, convention, shapes, dtypes, counts, counters, schedule state: each
    mismatch is named and leaves optimizer and params as they were."""
    src, _ = _trained(tmp_path)
    good = tmp_path / "good.npz"
    fo.save(good, src)
    opt, params = _trained(tmp_path)
    opt.step([np.ones((4, 3)), np.ones(5)])

    cases = [
        ("version", lambda m: m.update(checkpoint_version=2), None, "format version 2"),
        ("no-version", lambda m: m.pop("checkpoint_version"), None, "format version None"),
        ("state-version", lambda m: m.update(format_version=7), None, "format_version 1"),
        ("class", lambda m: m.update({"class": "SGD"}), None, "is of a SGD optimizer"),
        ("convention", lambda m: m["config"].update(convention="torch"), None,
         "convention='torch'"),
        ("iterations-float", lambda m: m.update(iterations=2.5), None, "iterations"),
        ("iterations-negative", lambda m: m.update(iterations=-1), None, ">= 0"),
        ("missing-steps", lambda m: m.pop("steps"), None, "missing"),
        ("shapes", lambda m: m.update(shapes=[[3, 4], [5]]), None, r"params\[0\].*shape"),
        ("dtypes", lambda m: m.update(dtypes=["<f8", "<f4"]), None, r"params\[1\].*dtype"),
        ("schedule-extra", lambda m: m.update(schedules={"defaults.learning_rate": {}}), None,
         "schedule state"),
        ("missing-array", None, lambda a: a.pop(next(k for k in a if "state" in k)),
         "missing array"),
        ("state-shape", None,
         lambda a: a.update({next(k for k in a if "state" in k): np.zeros(7)}),
         r"params\[0\] state 0"),
        ("state-dtype", None,
         lambda a: a.update({k: a[k].astype(np.float32) for k in list(a) if "/state/1/" in k}),
         r"params\[1\] state"),
        ("steps-negative", None, lambda a: a.update({k: -a[k] - 1 for k in list(a)
                                                     if k.endswith("/steps")}), ">= 0"),
        ("param-shape", None, lambda a: a.update({k: np.zeros(9) for k in list(a)
                                                  if k.endswith("params/1")}), r"params\[1\]"),
    ]
    for cid, em, ea, pattern in cases:
        p = _rewrite(good, tmp_path / f"{cid}.npz", em, ea)
        _refuse(p, opt, params, pattern)
    # a whole checkpoint of another optimizer / other shapes / other convention
    for cid, (cls, shapes, kw) in {
            "other-class": (fo.SGD, ((4, 3), (5,)), {"momentum": 0.9}),
            "other-shapes": (fo.Adam, ((3, 4), (5,)), {}),
            "other-count": (fo.Adam, ((4, 3),), {}),
            "other-dtype": (fo.Adam, ((4, 3), (5,)), {"convention": "keras"}),
            "other-convention": (fo.Adam, ((4, 3), (5,)), {"convention": "torch"}),
            "amsgrad": (fo.Adam, ((4, 3), (5,)), {"amsgrad": True})}.items():
        o, ps = _trained(tmp_path, cls, shapes, **kw)
        if cid == "other-dtype":
            ps32 = [p.astype(np.float32) for p in ps]
            o = fo.Adam(ps32)
        fo.save(tmp_path / f"{cid}.npz", o)
        _refuse(tmp_path / f"{cid}.npz", opt, params, r"params\[|optimizer|convention|arrays")


def test_bad_schedule_state_refused_before_anything_changes(tmp_path):
    plateau = schedules.ReduceOnPlateau(0.01, patience=0)
    w = np.ones(4)
    opt = fo.SGD([w], learning_rate=plateau, momentum=0.9)
    opt.step([np.ones(4)])
    plateau.report(1.0)
    plateau.report(2.0)
    fo.save(tmp_path / "good.npz", opt)
    opt.step([np.ones(4)])
    plateau.report(0.5)

    def bad_scale(m):
        m["schedules"]["defaults.learning_rate"]["scale"] = -1.0

    def unknown_key(m):
        m["schedules"]["defaults.learning_rate"]["bogus"] = 1

    for cid, edit in (("scale", bad_scale), ("key", unknown_key)):
        p = _rewrite(tmp_path / "good.npz", tmp_path / f"{cid}.npz", edit)
        before_sched = plateau.state_dict()
        _refuse(p, opt, [w], "schedule state")
        assert plateau.state_dict() == before_sched


def test_load_state_dict_validates_like_load(tmp_path):
    opt, params = _trained(tmp_path)
    sd = opt.state_dict()
    other, other_params = _trained(tmp_path, shapes=((4, 3), (6,)))
    same, same_params = _trained(tmp_path)
    # each refused for its own reason: the defects other than shape go to an
    # optimizer of the saved shapes
    cases = [(other, other_params, None, "format_version 1 expected, got None"),
             (other, other_params, {}, "format_version 1 expected, got None"),
             (other, other_params, dict(sd, format_version=2), "format_version 1 expected, got 2"),
             (other, other_params, sd, r"params\[1\]: the state was saved for shape \[5\]"),
             (same, same_params, dict(sd, iterations="3"), "iterations: step counters must be"),
             (same, same_params, dict(sd, state=sd["state"][:1]), "state has 1 parameters"),
             (same, same_params, dict(sd, steps=np.zeros(5, np.int64)),
              "steps: expected 2 integer counts"),
             (same, same_params, dict(sd, state=[[a[:-1] for a in s] for s in sd["state"]]),
              r"params\[0\] state 0: expected float64 \(4, 3\)")]
    for target, target_params, bad, pattern in cases:
        before = snapshot(target, target_params)
        with pytest.raises(ValueError, match=pattern):
            target.load_state_dict(bad)
        assert_unchanged(before, target, target_params, "load_state_dict")
        TALLY["inputs_tried"] += 1
        TALLY["failures_survived"] += 1


def test_save_without_params_and_lists_in_state_dict(tmp_path):
    opt, params = _trained(tmp_path)
    fo.save(tmp_path / "noparams.npz", opt, include_params=False)
    other, other_params = _trained(tmp_path)
    for p in other_params:
        p[...] = 3.0
    fo.load(tmp_path / "noparams.npz", other)
    assert all((p == 3.0).all() for p in other_params)     # params untouched
    assert _state_image(opt, params)[1:] == _state_image(other, other_params)[1:]


# ---- untrusted files: nothing is read or allocated before it is checked ------------

SIZE_BOUND = 32 << 20     # what loading these small checkpoints may allocate at most
BOMB = (1 << 25,)         # 256 MiB of float64 zeros: about 1.2 MB deflated


def _good(tmp_path, cls=fo.Adam, **kw):
    """A valid checkpoint of a trained ``cls``, and a second, further trained
    ``cls`` (different state) to load it into."""
    src, _ = _trained(tmp_path, cls, **kw)
    fo.save(tmp_path / "good.npz", src)
    opt, params = _trained(tmp_path, cls, **kw)
    opt.step([np.ones((4, 3)), np.ones(5)])
    return tmp_path / "good.npz", opt, params


def _member(path, fragment):
    with zipfile.ZipFile(path) as z:
        return next(n for n in z.namelist() if fragment in n)


def _refuse_small(path, opt, params, pattern):
    """Refused with a ValueError matching ``pattern`` that names the file,
    nothing changed, and no more than SIZE_BOUND bytes allocated meanwhile."""
    with traced_peak() as peak:
        _refuse(path, opt, params, re.escape(os.path.basename(path)) + ": .*" + pattern)
    assert peak[0] < SIZE_BOUND, f"loading {path} allocated {peak[0] >> 20} MiB"


def test_unreferenced_header_only_member_refused_unread(tmp_path):
    """A 1.6 KB file with a member claiming 373 GiB: refused by name, not allocated."""
    good, opt, params = _good(tmp_path)
    path = rebuild_npz(good, tmp_path / "junk.npz",
                       add={"junk.npy": npy_header((10 ** 11,), np.float32)})
    _refuse_small(path, opt, params, "member 'junk.npy' is not named by the checkpoint's "
                                     "metadata.*not a fastopt checkpoint")


def test_unreferenced_deflated_member_refused_unread(tmp_path):
    """A 1 MB file whose extra member inflates to 256 MiB: refused before any of it is read."""
    good, opt, params = _good(tmp_path)
    path = add_zeros_member(rebuild_npz(good, tmp_path / "bomb.npz"), "bomb.npy", BOMB,
                            np.float64)
    assert os.path.getsize(path) < 4 << 20
    _refuse_small(path, opt, params, "member 'bomb.npy' is not named")


def test_member_header_disagreeing_with_zip_size_refused_unread(tmp_path):
    """A referenced array whose header claims more than the member holds."""
    good, opt, params = _good(tmp_path)
    name = _member(good, "params/0")
    path = rebuild_npz(good, tmp_path / "claims.npz", drop={name},
                       add={name: npy_header((10 ** 11,), np.float64)})
    _refuse_small(path, opt, params, f"member '{name}': its header describes a float64 array "
                                     r"of shape \(100000000000,\).*zip directory gives the "
                                     "member 128 bytes")


def test_compressed_member_refused_unread(tmp_path):
    """A referenced state array of consistent size that inflates to 256 MiB from
    1 MB on disk: fastopt never writes compressed members, so what a checkpoint
    makes the reader allocate is bounded by its size on disk."""
    good, opt, params = _good(tmp_path)
    name = _member(good, "/state/0/0")
    path = add_zeros_member(rebuild_npz(good, tmp_path / "bigstate.npz", drop={name}), name,
                            BOMB, np.float64)
    assert os.path.getsize(path) < 4 << 20
    _refuse_small(path, opt, params, f"member '{name}': compressed, which fastopt never writes")


def test_member_shape_compared_with_the_optimizer_before_its_data_is_read(tmp_path):
    """A referenced array of consistent size but the wrong shape: refused from its
    header alone, naming the param."""
    good, opt, params = _good(tmp_path)
    name = _member(good, "/state/0/0")
    path = add_zeros_member(rebuild_npz(good, tmp_path / "bigstate.npz", drop={name}), name,
                            (1 << 20,), np.float64, deflate=False)
    _refuse_small(path, opt, params, r"params\[0\] state 0: expected float64 \(4, 3\); got "
                                     r"float64 \(1048576,\)")
    name = _member(good, "params/1")
    path = add_zeros_member(rebuild_npz(good, tmp_path / "bigparam.npz", drop={name}), name,
                            (1 << 20,), np.float64, deflate=False)
    _refuse_small(path, opt, params, r"params\[1\] is float64 \(1048576,\) in the checkpoint")


@pytest.mark.parametrize("cid,member,data,pattern", [
    ("raw-meta", checkpoint._META, b'{"checkpoint_version": 1}',
     "corrupt checkpoint, not a .npy array"),
    ("float-meta", checkpoint._META, npy_header((3,), np.float64) + bytes(24),
     r"corrupt checkpoint metadata \(a float64 array"),
    ("object-param", "params/0", npy_header((4, 3), object) + bytes(96),
     "holds object data of shape \\(4, 3\\).*numeric arrays only"),
    ("npy-3.0", "params/0", b"\x93NUMPY\x03\x00" + npy_header((4, 3), np.float64)[8:] + bytes(96),
     r"format version \(3, 0\)"),
])
def test_crafted_members_refused(tmp_path, cid, member, data, pattern):
    """The metadata as raw bytes or as another dtype; an array of Python objects."""
    good, opt, params = _good(tmp_path)
    name = _member(good, member)
    path = rebuild_npz(good, tmp_path / f"{cid}.npz", drop={name}, add={name: data})
    _refuse_small(path, opt, params, pattern)


def test_member_twice_refused(tmp_path):
    good, opt, params = _good(tmp_path)
    name = _member(good, "params/0")
    with pytest.warns(UserWarning, match="Duplicate name"):
        path = rebuild_npz(good, tmp_path / "twice.npz",
                           add={name: npy_header((4, 3), np.float64) + bytes(96)})
    _refuse_small(path, opt, params, f"member '{name}' appears twice")


def test_encrypted_member_refused(tmp_path):
    """zipfile raises RuntimeError for a member flagged as encrypted."""
    good, opt, params = _good(tmp_path)
    data = bytearray(good.read_bytes())
    name = _member(good, "params/0").encode()
    at = data.index(b"PK\x01\x02")             # the central directory entries
    while data[at + 46:at + 46 + len(name)] != name:
        at = data.index(b"PK\x01\x02", at + 4)
    data[at + 8] |= 0x1                         # general purpose flag: encrypted
    path = tmp_path / "encrypted.npz"
    path.write_bytes(bytes(data))
    _refuse_small(path, opt, params, f"member '{name.decode()}': encrypted")


def test_out_of_memory_while_reading_is_a_value_error(tmp_path, monkeypatch):
    good, opt, params = _good(tmp_path)

    def no_memory(*a, **k):
        raise MemoryError("Unable to allocate")

    monkeypatch.setattr(np.lib.format, "read_array", no_memory)
    _refuse(good, opt, params, r"good\.npz: member '.*' \(uint8 \(\d+,\)\) does not fit in "
                               "memory")


# ---- crafted metadata: ValueError naming the file, never another error ----------------

def _with_meta_bytes(src, dst, edit):
    """Copy the checkpoint ``src`` with the bytes of its metadata edited."""
    with np.load(src) as z:
        raw = z[checkpoint._META].tobytes()
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.frombuffer(edit(raw), dtype=np.uint8))
    member = checkpoint._META + ".npy"
    return rebuild_npz(src, dst, drop={member}, add={member: buf.getvalue()})


def _set(path, value):
    """A metadata edit setting the entry at ``path`` (keys separated by '.')."""
    def edit(meta):
        *keys, last = path.split(".")
        node = meta
        for k in keys:
            node = node[int(k)] if isinstance(node, list) else node[k]
        if isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value
    return edit


@pytest.mark.parametrize("cid,edit,pattern", [
    ("ref-list", _set("state.0.0", {"__array__": ["a/state/0/0"]}),
     "array reference must name a member"),
    ("ref-int", _set("steps", {"__array__": 7}), "array reference must name a member"),
    ("micro-inf", _set("extra.micro_steps", float("inf")), r"extra\.micro_steps: .*got inf"),
    ("micro-list", _set("extra.micro_steps", []), r"extra\.micro_steps: .*got \[\]"),
    ("micro-bool", _set("extra.micro_steps", True), r"extra\.micro_steps: .*got True"),
    ("micro-float", _set("extra.micro_steps", 2.0), r"extra\.micro_steps: .*got 2\.0"),
    ("micro-huge", _set("extra.micro_steps", 2 ** 63),
     r"extra\.micro_steps: step counters must be ints >= 0 and < 2\*\*63"),
    ("skipped-negative", _set("extra.skipped_steps", -1), r"extra\.skipped_steps: .*got -1"),
    ("skipped-str", _set("extra.skipped_steps", "3"), r"extra\.skipped_steps: .*got '3'"),
    ("iterations-huge", _set("iterations", 10 ** 400),
     "iterations: step counters must be ints >= 0 and < 2\\*\\*63; got an int of 1329 bits"),
    ("iterations-2**63", _set("iterations", 2 ** 63), "iterations: .*got 9223372036854775808"),
    ("iterations-bool", _set("iterations", True), "iterations: .*got True"),
    ("config-list", _set("config", [1]), "config: expected a dict; got list"),
    ("shapes-int", _set("shapes", 5), "shapes: expected a list"),
    ("shapes-of-ints", _set("shapes", [1, 2]), "shapes: expected a list"),
    ("dtypes-str", _set("dtypes", "<f8"), "dtypes: expected a list"),
    ("version-bool", _set("checkpoint_version", True), "format version True"),
])
def test_crafted_metadata_refused_with_a_value_error(tmp_path, cid, edit, pattern):
    good, opt, params = _good(tmp_path)
    path = _rewrite(good, tmp_path / f"{cid}.npz", edit)
    _refuse_small(path, opt, params, pattern)


@pytest.mark.parametrize("cid,edit,pattern", [
    ("deep", lambda b: b[:-1] + b', "deep": ' + b"[" * 100000 + b"]" * 100000 + b"}",
     r"corrupt checkpoint metadata \(RecursionError"),
    ("digits", lambda b: b.replace(b'"iterations": 3', b'"iterations": 1' + b"0" * 5000),
     r"corrupt checkpoint metadata \(ValueError: Exceeds the limit"),
    ("utf8", lambda b: b.replace(b'"Adam"', b'"Adam\xff"'),
     r"corrupt checkpoint metadata \(UnicodeDecodeError"),
])
def test_unparseable_metadata_refused_with_a_value_error(tmp_path, cid, edit, pattern):
    good, opt, params = _good(tmp_path)
    path = _with_meta_bytes(good, tmp_path / f"{cid}.npz", edit)
    _refuse_small(path, opt, params, pattern)


def test_step_counts_beyond_int64_refused(tmp_path):
    good, opt, params = _good(tmp_path)
    path = _rewrite(good, tmp_path / "steps.npz", edit_arrays=lambda a: a.update(
        {k: np.array([2 ** 63, 0], dtype=np.uint64) for k in list(a) if k.endswith("/steps")}))
    _refuse_small(path, opt, params, "steps: step counters must be >= 0 and < 2\\*\\*63")


def test_huge_iterations_refused_at_load_and_steps_still_work(tmp_path):
    """iterations = 10**400 used to load and then break every later step."""
    good, opt, params = _good(tmp_path)
    path = _rewrite(good, tmp_path / "huge.npz", _set("iterations", 10 ** 400))
    _refuse_small(path, opt, params, "iterations")
    before = opt.iterations
    opt.step([np.ones((4, 3)), np.ones(5)])
    assert opt.iterations == before + 1


@pytest.mark.parametrize("cid,value,pattern", [
    ("dicts", [{"a": 1}], r"extra\.momentum_products: expected 1 values; got float\(\)"),
    ("shape", [0.5, 0.5, 0.5], r"extra\.momentum_products: expected 1 values; got shape \(3,\)"),
    ("nan", [float("nan")], r"extra\.momentum_products: expected finite values"),
    ("inf", [float("inf")], r"extra\.momentum_products: expected finite values"),
])
def test_crafted_nadam_products_refused(tmp_path, cid, value, pattern):
    good, opt, params = _good(tmp_path, fo.Nadam)
    path = _rewrite(good, tmp_path / f"{cid}.npz", _set("extra.momentum_products", value),
                    lambda a: a.pop("a/extra/momentum_products"))
    _refuse_small(path, opt, params, pattern)


# ---- load is all or nothing --------------------------------------------------------

def test_load_into_a_read_only_param_changes_nothing(tmp_path):
    """The audit's case: the state used to be restored and params[0] copied
    before params[1] failed."""
    a, b = np.zeros(3), np.zeros(3)
    opt = fo.Adam([a, b], learning_rate=0.1)
    opt.step([np.ones(3), np.ones(3)])
    path = tmp_path / "ck.npz"
    fo.save(path, opt)                                   # iterations = 1
    for _ in range(3):
        opt.step([np.ones(3), np.ones(3)])               # iterations = 4
    b.flags.writeable = False
    before = snapshot(opt, [a, b])
    with pytest.raises(ValueError, match=r"ck\.npz: params\[1\] of the optimizer is read-only.*"
                                         r"nothing was loaded.*writeable"):
        fo.load(path, opt)
    assert_unchanged(before, opt, [a, b], "load into a read-only param")
    assert opt.iterations == 4
    b.flags.writeable = True
    fo.load(path, opt)
    assert opt.iterations == 1 and (a == b).all()


# ---- file modes ----------------------------------------------------------------------

@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_new_checkpoint_gets_the_mode_open_would_give(tmp_path, umask):
    opt, _ = _trained(tmp_path)
    old = os.umask(umask)
    try:
        fo.save(tmp_path / "ck.npz", opt)
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "ck.npz").st_mode) == 0o666 & ~umask


def test_resaving_keeps_the_file_mode(tmp_path):
    opt, _ = _trained(tmp_path)
    path = tmp_path / "ck.npz"
    fo.save(path, opt)
    os.chmod(path, 0o644)
    old = os.umask(0o077)
    try:
        fo.save(path, opt)
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644
    fo.load(path, opt)


# ---- a battery of crafted files: headers, sizes, duplicates, truncation, references ----

def _npy(shape, dtype, fill=0.0, fortran=False, descr=None):
    """A complete ``.npy`` member (format 1.0) of ``shape`` filled with ``fill``."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {
        "descr": descr or np.lib.format.dtype_to_descr(np.dtype(dtype)),
        "fortran_order": fortran, "shape": tuple(shape)})
    return buf.getvalue() + np.full(shape, fill, dtype=dtype).tobytes()


def _replace(name, data):
    """Craft: member ``name`` (the first whose name contains it) replaced by ``data``."""
    def craft(good, dst):
        member = _member(good, name)
        return rebuild_npz(good, dst, drop={member}, add={member: data})
    return craft


def _point(path_in_meta, target):
    """Craft: the metadata's array reference at ``path_in_meta`` names
    ``target``, and the member it named is gone (no member is left unnamed)."""
    def craft(good, dst):
        old = []

        def edit(meta):
            node = meta
            keys = path_in_meta.split(".")
            for k in keys[:-1]:
                node = node[int(k)] if isinstance(node, list) else node[k]
            last = int(keys[-1]) if isinstance(node, list) else keys[-1]
            old.append(node[last]["__array__"] + ".npy")
            node[last] = {"__array__": target}
        return _with_meta_bytes_json(good, dst, edit, drop=old)
    return craft


def _with_meta_bytes_json(src, dst, edit, drop=()):
    with zipfile.ZipFile(src) as z:
        raw = z.read(checkpoint._META + ".npy")
    meta = json.loads(np.lib.format.read_array(io.BytesIO(raw)).tobytes())
    edit(meta)
    text = json.dumps(meta).encode()
    member = checkpoint._META + ".npy"
    return rebuild_npz(src, dst, drop={member, *drop},
                       add={member: _npy((len(text),), np.uint8)[:-len(text)] + text})


def _duplicate(name, data=None):
    def craft(good, dst):
        member = _member(good, name)
        with zipfile.ZipFile(good) as z:
            payload = z.read(member) if data is None else data
        with pytest.warns(UserWarning, match="Duplicate name"):
            return rebuild_npz(good, dst, add={member: payload})
    return craft


def _truncate_member(name, keep):
    """Craft: member ``name`` cut to ``keep`` bytes (the zip directory agrees)."""
    def craft(good, dst):
        member = _member(good, name)
        with zipfile.ZipFile(good) as z:
            payload = z.read(member)
        return rebuild_npz(good, dst, drop={member}, add={member: payload[:keep(payload)]})
    return craft


def _cut_file(at):
    def craft(good, dst):
        data = good.read_bytes()
        dst.write_bytes(data[:at(data)])
        return dst
    return craft


CRAFTED = [
    # wrong .npy headers
    ("magic", _replace("/state/0/0", b"\x93NUMPX\x01\x00" + _npy((4, 3), np.float64)[8:]),
     "not a .npy array|corrupt"),
    ("header-len", _replace("/state/0/0", _npy((4, 3), np.float64)[:8] + b"\xff\xff"
                            + _npy((4, 3), np.float64)[10:]), "corrupt|truncated|header"),
    ("descr-f4", _replace("/state/0/0", _npy((4, 3), np.float32)), r"expected float64 \(4, 3\)"),
    ("descr-big-endian", _replace("/state/0/0", _npy((4, 3), ">f8")), "float64|byte order|>f8"),
    ("descr-complex", _replace("params/0", _npy((4, 3), np.complex128)), "complex128|float64"),
    ("zero-dim", _replace("/state/1/0", _npy((), np.float64)), r"expected float64 \(5,\)"),
    ("steps-float", _replace("steps", _npy((2,), np.float64, 3.0)), "steps"),
    ("steps-3", _replace("steps", _npy((3,), np.int64, 3)), "steps"),
    # oversized members: more than the optimizer holds, stored (not compressed)
    ("state-oversized", _replace("/state/1/1", _npy((1 << 19,), np.float64)),
     r"expected float64 \(5,\)"),
    ("param-oversized", _replace("params/0", _npy((1 << 19,), np.float64)),
     r"params\[0\] is float64 \(524288,\)"),
    ("meta-oversized", _replace(checkpoint._META, _npy((1 << 22,), np.uint8, 32)),
     "metadata|corrupt|too large"),
    # duplicates
    ("dup-state", _duplicate("/state/0/0"), "appears twice"),
    ("dup-meta", _duplicate(checkpoint._META), "appears twice"),
    ("dup-steps-other", _duplicate("steps", _npy((2,), np.int64, 9)), "appears twice"),
    # truncated members and files
    ("member-header-only", _truncate_member("/state/0/0", lambda b: 128), "truncated|corrupt"),
    ("member-short", _truncate_member("/state/0/0", lambda b: len(b) - 8), "truncated|corrupt"),
    ("member-empty", _truncate_member("params/1", lambda b: 0), "truncated|corrupt|not a .npy"),
    ("file-before-directory", _cut_file(lambda b: b.index(b"PK\x01\x02")),
     "not a fastopt checkpoint|truncated|corrupt"),
    ("file-mid-directory", _cut_file(lambda b: (b.index(b"PK\x01\x02") + len(b)) // 2),
     "not a fastopt checkpoint|truncated|corrupt"),
    # references that point elsewhere
    ("ref-missing", _point("state.0.0", "a/state/9/9"), "missing array 'a/state/9/9'"),
    ("ref-to-param", _point("state.1.0", "a/params/0"), "names array 'a/params/0' more than once"),
    ("ref-to-steps", _point("state.0.1", "a/steps"), "names array 'a/steps' more than once"),
    ("ref-twice", _point("state.1.1", "a/state/1/0"), "names array 'a/state/1/0' more than once"),
    ("ref-to-meta", _point("params.0", checkpoint._META), "metadata|uint8|expected"),
    ("ref-dotdot", _point("state.0.0", "../a/state/0/0"), "missing array '../a/state/0/0'"),
]


@pytest.mark.parametrize("cid,craft,pattern", CRAFTED, ids=[c[0] for c in CRAFTED])
def test_crafted_file_battery_refused(tmp_path, cid, craft, pattern):
    """Each crafted file is refused with a ValueError naming it, changes nothing,
    and allocates no more than SIZE_BOUND while being refused."""
    good, opt, params = _good(tmp_path)
    path = craft(good, tmp_path / f"{cid}.npz")
    _refuse_small(path, opt, params, f"({pattern})")


# ---- crafted checkpoints of compact storage: int8 blocks, bfloat16 words, master copies ----

def _good_compact(tmp_path):
    """A checkpoint of Adam with int8 state (a float32 param of 3 blocks and a
    bfloat16 param of 2 with its float32 master copy), and a further trained
    twin to load it into."""
    bf16 = pytest.importorskip("ml_dtypes").bfloat16

    def trained(extra_steps):
        params = [np.linspace(-1, 1, 600, dtype=np.float32),
                  np.linspace(-1, 1, 300).astype(bf16)]
        opt = fo.Adam(params, state_dtype="int8", min_8bit_size=0, master_weights=True)
        for k in range(3 + extra_steps):
            opt.step([np.full(600, 0.1 * (k + 1), np.float32),
                      np.full(300, 0.1 * (k + 1), np.float32)])
        return opt, params
    src, _ = trained(0)
    fo.save(tmp_path / "good.npz", src)
    opt, params = trained(1)
    return tmp_path / "good.npz", opt, params


def _edit_view(path_in_meta, edit):
    """Craft: ``edit`` applied to the metadata's array reference at ``path_in_meta``."""
    def craft(good, dst):
        def change(meta):
            node = meta
            for k in path_in_meta.split("."):
                node = node[int(k)] if isinstance(node, list) else node[k]
            edit(node)
        return _with_meta_bytes_json(good, dst, change)
    return craft


def _drop_masters(good, dst):
    return _with_meta_bytes_json(good, dst, lambda meta: meta["extra"].pop("masters"),
                                 drop={_member(good, "extra/masters/0")})


CRAFTED_COMPACT = [
    ("q8-blocks-short", _replace("/state/0/0", _npy((2, 260), np.uint8)),
     r"params\[0\] state.*int8 blocks"),
    ("q8-row-width", _replace("/state/0/1", _npy((3, 259), np.uint8)),
     "said to hold 'int8_blocks'"),
    ("q8-as-float32", _replace("/state/1/1", _npy((2, 65), np.float32)),
     "said to hold 'int8_blocks'"),
    ("q8-oversized", _replace("/state/1/0", _npy((1 << 17, 260), np.uint8)),
     r"params\[1\] state.*int8 blocks"),
    ("bf16-as-float32", _replace("params/1", _npy((300,), np.float32)),
     "said to hold 'bfloat16'"),
    ("bf16-short", _replace("params/1", _npy((299,), np.uint16)), r"params\[1\]"),
    ("view-unknown", _edit_view("state.0.0", lambda r: r.update(__view__="float8")),
     "said to hold 'float8'"),
    ("view-dropped", _edit_view("state.1.0", lambda r: r.pop("__view__")),
     r"params\[1\] state.*uint8"),
    ("view-on-float32", _edit_view("params.0", lambda r: r.update(__view__="bfloat16")),
     "said to hold 'bfloat16'"),
    ("masters-short", _replace("extra/masters/0", _npy((299,), np.float32)), "masters"),
    ("masters-dropped", _drop_masters, "masters"),
]


@pytest.mark.parametrize("cid,craft,pattern", CRAFTED_COMPACT,
                         ids=[c[0] for c in CRAFTED_COMPACT])
def test_crafted_compact_checkpoint_refused(tmp_path, cid, craft, pattern):
    """int8 blocks, bfloat16 words and master copies crafted wrong: each file is
    refused with a ValueError naming it, changes nothing (params, compact
    state, master copies) and allocates no more than SIZE_BOUND meanwhile."""
    good, opt, params = _good_compact(tmp_path)
    path = craft(good, tmp_path / f"{cid}.npz")
    masters = [m.tobytes() for m in opt.master_params if m is not None]
    _refuse_small(path, opt, params, f"({pattern})")
    assert [m.tobytes() for m in opt.master_params if m is not None] == masters
    fo.load(good, opt)          # the good file still loads
