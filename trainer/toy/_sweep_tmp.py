import sys, json, time, os, itertools
sys.path.insert(0, os.getcwd())
import types, importlib.util
try:
    import pydantic  # noqa
except ImportError:  # device image has no pydantic: load answer.py alone
    pkg = types.ModuleType("shared_schemas"); pkg.__path__ = [os.path.join(os.getcwd(), "shared_schemas")]
    sys.modules["shared_schemas"] = pkg
    spec = importlib.util.spec_from_file_location("shared_schemas.answer", "shared_schemas/answer.py")
    mod = importlib.util.module_from_spec(spec); sys.modules["shared_schemas.answer"] = mod; spec.loader.exec_module(mod)
from trainer.toy.base import ToyBaseArguments, build_toy_base
out = os.environ.get("OUT", "/tmp/h6/out")
configs = json.loads(sys.argv[1])
res = []
for i, kw in enumerate(configs):
    t = time.time()
    args = ToyBaseArguments(toy_data_dir="/tmp/toydata", toy_base_dir=f"/tmp/tb{i}", base_device="cuda", **kw)
    m = dict(build_toy_base(args).meta); m.pop("settings"); m.pop("cache_key")
    m["cfg"] = kw; m["wall"] = round(time.time() - t, 1)
    print(json.dumps(m), flush=True)
    res.append(m)
    json.dump(res, open(f"{out}/sweep.json", "w"), indent=1)
