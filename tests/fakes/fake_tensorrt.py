"""A fake `tensorrt` module per imitated version, generated from the real API dump of that version.

The module exposes exactly the dump's top-level names, enum members (with their values) and, on
each class, its methods and properties: anything else raises AttributeError, and every call is
checked against the real pybind11 signatures (positional count and keyword names), so code that
passes against the fake cannot use an API the real module lacks. Behaviour exists only for what a
build and a run need; an engine "plan" is JSON that records what was built, and execution runs
the parsed ONNX graph (carried in the plan) with ONNX Runtime on the fake CUDA memory, so outputs are real.
Every access is recorded in `platform.touched` ("Class.member"), every runtime call in `calls`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import types
from dataclasses import dataclass, field

import numpy as np

from fakes.api import accepts, load_api

ONNX_DTYPES = {1: "FLOAT", 10: "HALF", 2: "UINT8", 3: "INT8", 6: "INT32", 7: "INT64", 9: "BOOL"}
_SESSIONS: dict = {}  # onnx sha256 -> ONNX Runtime session (a cache: sessions are slow to create)
NUMPY = {"FLOAT": np.float32, "HALF": np.float16, "UINT8": np.uint8, "INT8": np.int8, "INT32": np.int32}


@dataclass
class FakePlatform:
    """What the fake GPU machine has and what happened on it."""

    cuda: object = None  # FakeCuda: the memory execute_async_v3 reads and writes
    num_dla_cores: int = 0
    parser_errors: list = field(default_factory=list)  # [(node index, node name, operator, description)]
    build_fails: bool = False
    execute_fails_in_capture: bool = False
    touched: set = field(default_factory=set)
    calls: list = field(default_factory=list)
    networks: dict = field(default_factory=dict)  # onnx sha256 -> model bytes


class EnumMember:
    def __init__(self, enum: str, name: str, value: int):
        self.enum, self.name, self.value = enum, name, value

    def __int__(self) -> int:
        return self.value

    __index__ = __int__

    def __eq__(self, other) -> bool:
        return isinstance(other, EnumMember) and (other.enum, other.value) == (self.enum, self.value)

    def __hash__(self) -> int:
        return hash((self.enum, self.value))

    def __repr__(self) -> str:
        return f"<{self.enum}.{self.name}: {self.value}>"


class _Recording(type):
    """Metaclass: class-level attribute reads (enum members, Logger.WARNING) are recorded."""

    def __getattribute__(cls, name):
        if name in type.__getattribute__(cls, "_public"):
            platform = type.__getattribute__(cls, "_platform")
            platform.touched.add(f"{type.__getattribute__(cls, '_qualname')}.{name}")
        return type.__getattribute__(cls, name)


def _make_enum(qualname: str, entry: dict, platform: FakePlatform) -> type:
    members = {m: EnumMember(qualname.split(".")[-1], m, v) for m, v in entry["values"].items()}
    return _Recording(qualname.split(".")[-1], (), {**members, "_platform": platform, "_qualname": qualname,
                                                    "_public": frozenset(members), "__members__": dict(members)})


class FakeObject:
    """Base of every generated class: only the dump's members exist, calls are signature-checked."""

    _api: dict = {}
    _qualname = ""
    _platform: FakePlatform

    def __init__(self, *args, **kwargs):
        if not type(self)._api.get("constructible"):
            raise TypeError(f"{self._qualname}: No constructor defined!")
        if not accepts(type(self)._api["init"], args, kwargs):
            raise TypeError(f"{self._qualname}{args} {kwargs} matches no real constructor {type(self)._api['init']}")
        object.__setattr__(self, "_state", {})
        self._setup(*args, **kwargs)

    @classmethod
    def _new(cls, **state):
        obj = object.__new__(cls) if not issubclass(cls, bytes) else bytes.__new__(cls, state.pop("_bytes", b""))
        object.__setattr__(obj, "_state", dict(state))
        return obj

    def _setup(self, *args, **kwargs) -> None:
        pass

    def __getattribute__(self, name):
        if name.startswith("_"):
            return object.__getattribute__(self, name)
        cls = type(self)
        api = cls._api
        cls._platform.touched.add(f"{cls._qualname}.{name}")
        if name in api["methods"]:
            impl = getattr(cls, f"do_{name}", None)
            if impl is None:
                raise NotImplementedError(f"the fake does not simulate {cls._qualname}.{name}")

            def call(*args, **kwargs):
                if not accepts(api["methods"][name], args, kwargs):
                    raise TypeError(f"{cls._qualname}.{name}{args} {kwargs} matches no real signature "
                                    f"{api['methods'][name]}")
                return impl(self, *args, **kwargs)

            return call
        if name in api["properties"]:
            state = object.__getattribute__(self, "_state")
            getter = getattr(cls, f"get_{name}", None)
            if getter is not None:
                return getter(self)
            if name not in state:
                raise NotImplementedError(f"the fake does not simulate {cls._qualname}.{name}")
            return state[name]
        if name in api["attributes"] or name in api["nested"]:
            return getattr(cls, name)
        raise AttributeError(f"'{cls._qualname}' object has no attribute '{name}' (TensorRT {cls._version})")

    def __setattr__(self, name, value):
        cls = type(self)
        prop = cls._api["properties"].get(name)
        if prop is None:
            raise AttributeError(f"'{cls._qualname}' has no property '{name}' (TensorRT {cls._version})")
        if prop["readonly"]:
            raise AttributeError(f"{cls._qualname}.{name} is read-only")
        cls._platform.touched.add(f"{cls._qualname}.{name}")
        self._state[name] = value


# ---- behaviour, attached by name (do_<method>, get_<property>) to the generated classes ----------


class LoggerImpl:
    def _setup(self, min_severity=None):
        self._state["min_severity"] = min_severity


class BuilderImpl:
    def _setup(self, logger):
        self._state.update(logger=logger)

    def get_num_DLA_cores(self):
        return self._platform.num_dla_cores

    def do_create_network(self, flags=0):
        return self._trt.INetworkDefinition._new(flags=int(flags), inputs=[], outputs=[])

    def do_create_builder_config(self):
        return self._trt.IBuilderConfig._new(flags_set=[], profiles=[], pool_limits={}, timing_cache=None,
                                             builder_optimization_level=3, DLA_core=-1,
                                             default_device_type=self._trt.DeviceType.GPU)

    def do_create_optimization_profile(self):
        return self._trt.IOptimizationProfile._new(shapes={})

    def do_build_serialized_network(self, network, config):
        self._platform.calls.append(("build_serialized_network",))
        if self._platform.build_fails or not network._state["inputs"]:
            return None
        (profile,) = config._state["profiles"]
        plan = {"fake_tensorrt": self._version, "onnx_sha256": network._state["sha256"],
                "onnx": base64.b64encode(self._platform.networks[network._state["sha256"]]).decode(),
                "network_flags": network._state["flags"], "builder_flags": sorted(config._state["flags_set"]),
                "device": config._state["default_device_type"].name, "dla_core": config._state["DLA_core"],
                "pool_limits": config._state["pool_limits"], "opt_level": config._state["builder_optimization_level"],
                "profile": profile._state["shapes"], "inputs": network._state["inputs"],
                "outputs": network._state["outputs"]}
        return self._trt.IHostMemory._new(_bytes=json.dumps(plan).encode())


class INetworkDefinitionImpl:
    def get_num_inputs(self):
        return len(self._state["inputs"])

    def get_num_outputs(self):
        return len(self._state["outputs"])

    def do_get_input(self, index):
        name, shape, dtype = self._state["inputs"][index]
        return self._trt.ITensor._new(name=name, shape=self._trt.Dims(shape), dtype=getattr(self._trt.DataType, dtype))


class OnnxParserImpl:
    def _setup(self, network, logger):
        self._state.update(network=network, errors=[], flags_set=[])

    def do_set_flag(self, flag):
        self._state["flags_set"].append(flag.name)

    def do_parse(self, model, path=None):
        import onnx

        self._platform.calls.append(("parse",))
        if self._platform.parser_errors:
            self._state["errors"] = list(self._platform.parser_errors)
            return False
        data = bytes(model)
        graph = onnx.load_from_string(data).graph
        initializers = {i.name for i in graph.initializer}

        def spec(vi):
            dims = [d.dim_value if d.HasField("dim_value") else -1 for d in vi.type.tensor_type.shape.dim]
            return vi.name, dims, ONNX_DTYPES[vi.type.tensor_type.elem_type]

        network = self._state["network"]
        sha = hashlib.sha256(data).hexdigest()
        self._platform.networks[sha] = data
        network._state.update(inputs=[spec(v) for v in graph.input if v.name not in initializers],
                              outputs=[spec(v) for v in graph.output], sha256=sha)
        return True

    def get_num_errors(self):
        return len(self._state["errors"])

    def do_get_error(self, index):
        return self._trt.ParserError._new(error=self._state["errors"][index])


class ParserErrorImpl:
    def do_node(self):
        return self._state["error"][0]

    def do_node_name(self):
        return self._state["error"][1]

    def do_node_operator(self):
        return self._state["error"][2]

    def do_desc(self):
        return self._state["error"][3]


class IBuilderConfigImpl:
    def do_set_memory_pool_limit(self, pool, pool_size):
        self._state["pool_limits"][pool.name] = int(pool_size)

    def do_set_flag(self, flag):
        self._state["flags_set"].append(flag.name)

    def do_add_optimization_profile(self, profile):
        self._state["profiles"].append(profile)
        return len(self._state["profiles"]) - 1

    def do_create_timing_cache(self, serialized_timing_cache):
        return self._trt.ITimingCache._new(data=bytes(serialized_timing_cache))

    def do_set_timing_cache(self, cache, ignore_mismatch):
        self._state["timing_cache"] = cache
        return True

    def do_get_timing_cache(self):
        return self._state["timing_cache"]


class IOptimizationProfileImpl:
    def do_set_shape(self, input, min, opt, max):  # noqa: A002 - the real keyword names
        self._state["shapes"][input] = [list(min), list(opt), list(max)]


class ITimingCacheImpl:
    def do_serialize(self):
        return self._trt.IHostMemory._new(_bytes=self._state["data"] + b"timing;")


class IHostMemoryImpl:
    def get_nbytes(self):
        return len(self)


class DimsImpl:
    def _setup(self, shape=()):
        self._state["dims"] = [int(d) for d in shape]

    def __getitem__(self, index):
        return object.__getattribute__(self, "_state")["dims"][index]

    def __len__(self):
        return len(object.__getattribute__(self, "_state")["dims"])


class RuntimeImpl:
    def _setup(self, logger):
        self._state.update(logger=logger, engine_host_code_allowed=False)

    def do_deserialize_cuda_engine(self, serialized_engine):
        try:
            plan = json.loads(bytes(serialized_engine))
        except ValueError:
            return None
        if plan.get("fake_tensorrt") != self._version:
            return None  # like the real runtime: a plan from another version does not deserialize
        return self._trt.ICudaEngine._new(plan=plan)


class ICudaEngineImpl:
    def _io(self):
        plan = self._state["plan"]
        return [(n, s, d, "INPUT") for n, s, d in plan["inputs"]] + [(n, s, d, "OUTPUT") for n, s, d in plan["outputs"]]

    def get_num_io_tensors(self):
        return len(self._io())

    def do_get_tensor_name(self, index):
        return self._io()[index][0]

    def _find(self, name):
        return next(t for t in self._io() if t[0] == name)

    def do_get_tensor_mode(self, name):
        return getattr(self._trt.TensorIOMode, self._find(name)[3])

    def do_get_tensor_dtype(self, name):
        return getattr(self._trt.DataType, self._find(name)[2])

    def do_get_tensor_shape(self, name):
        return self._trt.Dims(self._find(name)[1])

    def do_get_tensor_profile_shape(self, name, profile_index):
        return [self._trt.Dims(s) for s in self._state["plan"]["profile"][name]]

    def do_create_execution_context(self, strategy=None):
        return self._trt.IExecutionContext._new(engine=self, shapes={}, addresses={})


class IExecutionContextImpl:
    def do_set_input_shape(self, name, shape):
        self._platform.calls.append(("set_input_shape", name, tuple(shape)))
        low, _, high = self._state["engine"]._state["plan"]["profile"][name]
        if not all(lo <= s <= hi for lo, s, hi in zip(low, shape, high)):
            return False
        self._state["shapes"][name] = tuple(shape)
        return True

    def do_set_tensor_address(self, name, memory):
        self._platform.calls.append(("set_tensor_address", name, int(memory)))
        self._state["addresses"][name] = int(memory)
        return True

    def do_execute_async_v3(self, stream_handle):
        cuda = self._platform.cuda
        self._platform.calls.append(("execute_async_v3", int(stream_handle)))
        if cuda.capturing(stream_handle) and self._platform.execute_fails_in_capture:
            return False
        cuda.enqueue(stream_handle, self._compute)
        return True

    def _compute(self):
        """Run the engine's ONNX graph with ONNX Runtime on the bound device memory."""
        import onnxruntime as ort

        plan = self._state["engine"]._state["plan"]
        cuda, addresses = self._platform.cuda, self._state["addresses"]
        (name, _, dtype), = plan["inputs"]
        shape = self._state["shapes"][name]
        feed = {name: cuda.view(addresses[name], shape, NUMPY[dtype]).copy()}
        if plan["onnx_sha256"] not in _SESSIONS:
            _SESSIONS[plan["onnx_sha256"]] = ort.InferenceSession(base64.b64decode(plan["onnx"]),
                                                                  providers=["CPUExecutionProvider"])
        session = _SESSIONS[plan["onnx_sha256"]]
        for (out, _, out_dtype), value in zip(plan["outputs"], session.run([o[0] for o in plan["outputs"]], feed)):
            cuda.view(addresses[out], value.shape, NUMPY[out_dtype])[...] = value


IMPLS = {"Logger": LoggerImpl, "Builder": BuilderImpl, "INetworkDefinition": INetworkDefinitionImpl,
         "OnnxParser": OnnxParserImpl, "ParserError": ParserErrorImpl, "IBuilderConfig": IBuilderConfigImpl,
         "IOptimizationProfile": IOptimizationProfileImpl, "ITimingCache": ITimingCacheImpl,
         "IHostMemory": IHostMemoryImpl, "Dims": DimsImpl, "Runtime": RuntimeImpl, "ICudaEngine": ICudaEngineImpl,
         "IExecutionContext": IExecutionContextImpl}


class RecordingModule(types.ModuleType):
    def __getattribute__(self, name):
        if not name.startswith("_") and name in types.ModuleType.__getattribute__(self, "_api"):
            types.ModuleType.__getattribute__(self, "_platform").touched.add(name)
        return types.ModuleType.__getattribute__(self, name)


def make_fake_tensorrt(version: str, platform: FakePlatform) -> types.ModuleType:
    """A `tensorrt` module with the names, enums and signatures of the real `version`."""
    api = load_api(version)
    module = RecordingModule("tensorrt")
    module._api, module._platform = api, platform
    for name, entry in api.items():
        kind = entry["kind"]
        if kind == "enum":
            setattr(module, name, _make_enum(name, entry, platform))
        elif kind == "class":
            impl = IMPLS.get(name)
            bases = (impl, FakeObject) if impl else (FakeObject,)
            if entry["buffer_protocol"]:
                bases = (*bases, bytes)
            namespace = {"_api": entry, "_qualname": name, "_platform": platform, "_version": version,
                         "_trt": module, "_public": frozenset(entry["attributes"]) | frozenset(entry["nested"])}
            for nested, sub in entry["nested"].items():
                if sub["kind"] == "enum":
                    namespace[nested] = _make_enum(f"{name}.{nested}", sub, platform)
            for attr, value in entry["attributes"].items():  # e.g. Logger.WARNING = <Severity.WARNING: 2>
                enum_name, _, member = value["value"].strip("<>").split(":")[0].rpartition(".")
                if enum_name in namespace:
                    namespace[attr] = getattr(namespace[enum_name], member)
            setattr(module, name, _Recording(name, bases, namespace))
        elif kind == "constant" and name == "__version__":
            module.__version__ = version
    platform.touched.clear()  # what building the fake itself looked up is not the code's use
    return module


def install(monkeypatch, version: str, cuda=None, **platform_options) -> FakePlatform:
    """Make `import tensorrt` return the fake for `version` for one test; returns its platform."""
    import sys

    from fakes.fake_cuda import FakeCuda

    platform = FakePlatform(**platform_options)
    platform.cuda = cuda if cuda is not None else FakeCuda(calls=platform.calls)
    platform.cuda.calls = platform.calls
    monkeypatch.setitem(sys.modules, "tensorrt", make_fake_tensorrt(version, platform))
    return platform
