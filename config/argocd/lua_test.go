package argocd_test

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	lua "github.com/yuin/gopher-lua"
)

// Argo CD health status codes.
const (
	Healthy     = "Healthy"
	Progressing = "Progressing"
	Degraded    = "Degraded"
	Suspended   = "Suspended"
	Missing     = "Missing"
	Unknown     = "Unknown"
)

// healthStatus is what a health script returned.
type healthStatus struct {
	Status  string
	Message string
}

// runHealth runs an Argo CD Lua health script (the *.lua files here) on a
// Kubernetes object the way Argo CD does: the object is the global `obj` (a Lua
// table built from its unstructured content), only Lua's package, base and
// table libraries are loaded (as for a custom health check in argocd-cm), the
// script has one second, and it must return a table with `status` and an
// optional `message`. Only the tests use it: the scripts themselves ship as
// text in argocd-cm.
// obj is an object's unstructured content, as Unstructured.Object holds it.
func runHealth(script string, obj map[string]any) (healthStatus, error) {
	L := lua.NewState(lua.Options{SkipOpenLibs: true})
	defer L.Close()
	for _, lib := range []struct {
		name string
		open lua.LGFunction
	}{
		{lua.LoadLibName, lua.OpenPackage},
		{lua.BaseLibName, lua.OpenBase},
		{lua.TabLibName, lua.OpenTable},
	} {
		if err := L.CallByParam(lua.P{Fn: L.NewFunction(lib.open), NRet: 0, Protect: true}, lua.LString(lib.name)); err != nil {
			return healthStatus{}, fmt.Errorf("opening Lua library %q: %w", lib.name, err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	L.SetContext(ctx)

	L.SetGlobal("obj", toLua(L, obj))
	if err := L.DoString(script); err != nil {
		return healthStatus{}, fmt.Errorf("health script: %w", err)
	}
	ret, ok := L.Get(-1).(*lua.LTable)
	if !ok {
		return healthStatus{}, fmt.Errorf("health script returned %s, not a table", L.Get(-1).Type())
	}
	var st healthStatus
	switch v := ret.RawGetString("status").(type) {
	case lua.LString:
		st.Status = string(v)
	default:
		return healthStatus{}, fmt.Errorf("health script returned status %s (%s), not a string", v.String(), v.Type())
	}
	switch v := ret.RawGetString("message").(type) {
	case lua.LString:
		st.Message = string(v)
	case *lua.LNilType:
	default:
		return healthStatus{}, fmt.Errorf("health script returned message %s (%s), not a string", v.String(), v.Type())
	}
	switch st.Status {
	case Healthy, Progressing, Degraded, Suspended, Missing, Unknown:
	default:
		return healthStatus{}, fmt.Errorf("health script returned invalid status %q", st.Status)
	}
	return st, nil
}

// toLua converts unstructured content to Lua values as Argo CD does: maps and
// slices become tables (slices 1-based), numbers become numbers, and anything
// else becomes nil.
func toLua(ls *lua.LState, v any) lua.LValue {
	switch v := v.(type) {
	case nil:
		return lua.LNil
	case bool:
		return lua.LBool(v)
	case string:
		return lua.LString(v)
	case int:
		return lua.LNumber(v)
	case int32:
		return lua.LNumber(v)
	case int64:
		return lua.LNumber(v)
	case float64:
		return lua.LNumber(v)
	case json.Number:
		return lua.LString(v)
	case []any:
		t := ls.CreateTable(len(v), 0)
		for _, item := range v {
			t.Append(toLua(ls, item))
		}
		return t
	case map[string]any:
		t := ls.CreateTable(0, len(v))
		for k, item := range v {
			t.RawSetString(k, toLua(ls, item))
		}
		return t
	}
	return lua.LNil
}
