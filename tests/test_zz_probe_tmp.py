import json, random, copy
from conftest import load_recorded, recorded_names, endpoint_for

def paths(doc, prefix=(), depth=0):
    yield prefix
    if depth > 12: return
    if isinstance(doc, dict):
        for k, v in doc.items():
            if k == "managedFields": continue
            yield from paths(v, prefix + (k,), depth+1)
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield from paths(v, prefix + (i,), depth+1)

ODD = [None, 0, -1, 1.5, True, "", "x"*300, [], {}, [1, "a"], {"a": 1}, "9e999", "-1Gi", 10**30]

def setp(doc, path, value):
    cur = doc
    for p in path[:-1]: cur = cur[p]
    cur[path[-1]] = value

def test_probe(start_guard):
    g = start_guard()
    errors = {}
    statuses = {}
    for name in recorded_names():
        base = load_recorded(name)
        for path in list(paths(base["request"], ("request",))):
            if len(path) < 2: continue
            for v in ODD:
                d = copy.deepcopy(base)
                setp(d, path, v)
                r = g.post(endpoint_for(name), d)
                statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
                if r.status_code == 200:
                    resp = r.json()["response"]
                    if resp.get("status", {}).get("code") == 500:
                        key = (name.split("-")[0] + "-" + name.split("-")[1], "/".join(str(p) for p in path[2:] if not isinstance(p,int)), type(v).__name__)
                        errors.setdefault(key, 0); errors[key] += 1
                elif r.status_code not in (400,):
                    print("STATUS", r.status_code, name, path, v, r.text[:200])
    print(statuses)
    for k in sorted(errors): print(k, errors[k])
