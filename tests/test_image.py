"""vast_magic.image: Image steps as data, idempotence, validation, secrets and ImageSpec."""
from __future__ import annotations

import dataclasses

import pytest

from vast_magic.errors import ConfigError
from vast_magic.image import DEFAULT_IMAGE, DEFAULT_STORAGE, Image, ImageSpec
from vast_magic.query import H100_SXM, RTX_4090, Query, cpu_cores, gpu_name, gpu_ram, verified
from vast_magic.secret import Secret

SECRET_VALUE = "s3cr3t-value-never-shown"


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("VAST_MAGIC_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.txt").write_text("a")
    (tmp_path / "prep.py").write_text("print('prep')\n")


def build(image: Image) -> Image:
    """One notebook cell's worth of steps."""
    return (image.pip_install("numpy", "httpx").apt_get("ffmpeg")
            .env(MODE="fast", TOKEN=Secret(SECRET_VALUE))
            .require(gpu_ram >= 24, gpu_name.in_([RTX_4090, H100_SXM]))
            .run_script("mkdir -p cache").run_cmd("python", "prep.py")
            .copy("data/", "data").copy("prep.py", "/opt/prep.py")
            .venv("/venv/main").publish_port(8080).publish_port(5353, type_="udp"))


def test_defaults():
    spec = Image(DEFAULT_IMAGE).spec()
    assert DEFAULT_IMAGE == "vastai/base-image:@vastai-automatic-tag" and DEFAULT_STORAGE == 16
    assert spec == ImageSpec(from_image=DEFAULT_IMAGE, storage=16, pip=(), apt=(), env=(),
                             requirements=Query.search_defaults(), search="rentable=true rented=false verified=true",
                             runs=(), copies=(), venv=None, system_python=False, ports=((3000, "tcp"),),
                             docker_login=())
    assert spec.python_mode == "default"


def test_spec_fields_are_exactly_the_contract():
    assert [f.name for f in dataclasses.fields(ImageSpec)] == [
        "from_image", "storage", "pip", "apt", "env", "requirements", "search", "runs", "copies", "venv",
        "system_python", "ports", "docker_login"]
    spec = Image("img").spec()
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.pip = ("x",)


def test_every_step_is_recorded(tmp_path):
    spec = build(Image("pytorch/pytorch:2.3", storage=40.0)).spec()
    assert spec.from_image == "pytorch/pytorch:2.3" and spec.storage == 40
    assert spec.pip == ("numpy", "httpx") and spec.apt == ("ffmpeg",)
    assert spec.env == (("MODE", "fast"), ("TOKEN", Secret(SECRET_VALUE)))
    assert spec.plain_env() == (("MODE", "fast"),)
    assert spec.secret_env() == (("TOKEN", Secret(SECRET_VALUE)),)
    assert spec.requirements == (gpu_ram >= 24) & gpu_name.in_([RTX_4090, H100_SXM]) & Query.search_defaults()
    assert spec.search == "gpu_name in RTX_4090,H100_SXM gpu_ram>=24 rentable=true rented=false verified=true"
    assert spec.runs == ("mkdir -p cache", ("python", "prep.py"))
    assert spec.copies == ((str(tmp_path / "data"), "data"), (str(tmp_path / "prep.py"), "/opt/prep.py"))
    assert spec.venv == "/venv/main" and spec.python_mode == "venv:/venv/main" and not spec.system_python
    assert spec.ports == ((3000, "tcp"), (5353, "udp"), (8080, "tcp"))


def test_running_the_same_cell_twice_is_a_no_op():
    image = build(Image("img"))
    first = image.spec()
    assert build(image) is image
    assert image.spec() == first
    assert hash(image.spec()) == hash(first)


@pytest.mark.parametrize("steps, expected", [
    (lambda i: i.pip_install("a", "b", "a").pip_install("c", "b"), {"pip": ("a", "b", "c")}),
    (lambda i: i.apt_get("x").apt_get("y", "x"), {"apt": ("x", "y")}),
    (lambda i: i.env(A="1", B="2").env(A="3"), {"env": (("A", "3"), ("B", "2"))}),
    (lambda i: i.run_script("echo 1").run_cmd("ls").run_script("echo 1").run_cmd("ls"),
     {"runs": ("echo 1", ("ls",))}),
    (lambda i: i.copy("data", "d").copy("./data/", "d").copy("data", "e"), {"copies_dst": ("d", "e")}),
    (lambda i: i.venv("/v").use_system_python(), {"python_mode": "system", "venv": None}),
    (lambda i: i.use_system_python().venv("/v"), {"python_mode": "venv:/v", "system_python": False}),
    (lambda i: i.publish_port(3000).publish_port(8080).publish_port(8080), {"ports": ((3000, "tcp"), (8080, "tcp"))}),
])
def test_steps_are_idempotent_and_merge(steps, expected):
    spec = steps(Image("img")).spec()
    for name, value in expected.items():
        actual = tuple(d for _, d in spec.copies) if name == "copies_dst" else getattr(spec, name)
        assert actual == value


@pytest.mark.parametrize("steps, search", [
    (lambda i: i.require(gpu_ram >= 24).require(gpu_ram >= 48), "gpu_ram>=48 rentable=true rented=false verified=true"),
    (lambda i: i.require(gpu_ram >= 24, gpu_ram < 80), "gpu_ram>=24 gpu_ram<80 rentable=true rented=false verified=true"),
    (lambda i: i.require(verified == False), "rentable=true rented=false verified=false"),  # noqa: E712
    (lambda i: i.require(verified != False), "rentable=true rented=false verified!=false"),  # noqa: E712
    (lambda i: i.require((gpu_ram >= 24) & (cpu_cores >= 16)).require((gpu_ram >= 24) & (cpu_cores >= 16)),
     "cpu_cores>=16 gpu_ram>=24 rentable=true rented=false verified=true"),
])
def test_require_replaces_bounds_and_may_override_defaults(steps, search):
    assert steps(Image("img")).spec().search == search


def test_docker_login_is_recorded_and_the_password_masked():
    image = Image("private/img", docker_login_user="me", docker_login_pass=SECRET_VALUE, docker_login_repo="ghcr.io")
    login = dict(image.spec().docker_login)
    assert login["docker_login_user"] == "me" and login["docker_login_repo"] == "ghcr.io"
    assert isinstance(login["docker_login_pass"], Secret) and login["docker_login_pass"].reveal() == SECRET_VALUE
    assert SECRET_VALUE not in repr(image) and SECRET_VALUE not in repr(image.spec())


def test_no_repr_shows_a_secret(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", SECRET_VALUE)
    image = build(Image("img")).env(HF=Secret.from_env("HF_TOKEN"))
    for text in (repr(image), str(image), repr(image.spec()), str(image.spec()), repr(image.spec().secret_env()),
                 repr(Secret(SECRET_VALUE)), f"{Secret(SECRET_VALUE)}"):
        assert SECRET_VALUE not in text
    assert "Secret('***')" in repr(image) and "Secret.from_env('HF_TOKEN')" in repr(image.spec())


def test_repr_is_readable():
    image = Image("img").pip_install("numpy").require(gpu_ram >= 24)
    assert repr(image) == ("Image('img', storage=16, pip=('numpy',), "
                           "search='gpu_ram>=24 rentable=true rented=false verified=true')")


@pytest.mark.parametrize("step, message", [
    (lambda: Image(""), "Image name must be a non-empty string"),
    (lambda: Image("my image"), "contains whitespace"),
    (lambda: Image(None), "Image name must be a non-empty string"),
    (lambda: Image("img", storage=0), "storage must be a positive number of GB"),
    (lambda: Image("img", storage=-5), "storage must be a positive number of GB"),
    (lambda: Image("img", storage=True), "storage must be a positive number of GB"),
    (lambda: Image("img", storage="16"), "storage must be a positive number of GB"),
    (lambda: Image("img", docker_login_user=""), "docker_login_user must be a non-empty string"),
    (lambda: Image("img").pip_install("numpy pandas"), "pip_install('numpy', 'pandas')"),
    (lambda: Image("img").pip_install(""), "pip_install package must be a non-empty string"),
    (lambda: Image("img").pip_install(3), "pip_install package must be a non-empty string"),
    (lambda: Image("img").apt_get("ffmpeg\n"), "apt_get package 'ffmpeg\\n' contains whitespace"),
    (lambda: Image("img").env(**{"1BAD": "x"}), "env name '1BAD' is invalid"),
    (lambda: Image("img").env(**{"A-B": "x"}), "env name 'A-B' is invalid"),
    (lambda: Image("img").env(PORT=8080), "write PORT='8080'"),
    (lambda: Image("img").env(FLAG=None), "values must be str or Secret"),
    (lambda: Image("img").publish_port(0), "int in 1..65535"),
    (lambda: Image("img").publish_port(65536), "int in 1..65535"),
    (lambda: Image("img").publish_port("80"), "int in 1..65535"),
    (lambda: Image("img").publish_port(80, type_="http"), "type_ must be 'tcp' or 'udp'"),
    (lambda: Image("img").copy("missing.txt", "x"), "copy src 'missing.txt' does not exist"),
    (lambda: Image("img").copy("data", ""), "copy dst must be a non-empty string"),
    (lambda: Image("img").copy("data", "../up"), "contains '..'"),
    (lambda: Image("img").copy("data", "a/../../b"), "contains '..'"),
    (lambda: Image("img").copy("data", "./"), "bundle root"),
    (lambda: Image("img").run_script(""), "run_script must be a non-empty string"),
    (lambda: Image("img").run_cmd(), "run_cmd takes the program"),
    (lambda: Image("img").run_cmd("python", 3), "run_cmd takes the program"),
    (lambda: Image("img").venv(""), "venv path must be a non-empty string"),
    (lambda: Image("img").require("gpu_ram >= 24"), "parse_requirement"),
    (lambda: Image("img").require(gpu_ram), "require() takes queries"),
])
def test_bad_input_fails_at_the_call(step, message):
    with pytest.raises(ConfigError) as info:
        step()
    assert message in str(info.value)


def test_a_failed_env_call_changes_nothing():
    image = Image("img").env(A="1")
    with pytest.raises(ConfigError):
        image.env(B="2", C=3)
    assert image.spec().env == (("A", "1"),)


def test_preview_offers_asks_the_function_it_was_given():
    calls = []
    image = Image("img", offers=lambda spec, api_key: calls.append((spec, api_key)) or "preview").require(gpu_ram >= 24)
    assert image.preview_offers(api_key="k") == "preview"
    assert calls == [(image.spec(), "k")]
    priced = Image("img", offers=lambda spec, api_key, pricing: pricing)
    assert priced.preview_offers(pricing="reserved") == "reserved"


def test_an_image_without_an_offers_function_says_how_to_get_one():
    with pytest.raises(ConfigError, match=r"create it with app.image\(...\)"):
        Image("img").preview_offers()
