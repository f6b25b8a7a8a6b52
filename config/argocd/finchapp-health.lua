-- Argo CD health check for finch.connectops.dev/FinchApp and ClusterFinchApp
-- (argocd-cm keys: resource.customizations.health.finch.connectops.dev_FinchApp
-- and resource.customizations.health.finch.connectops.dev_ClusterFinchApp).
--
--   Progressing  no status yet, or status.observedGeneration < metadata.generation
--                ("Waiting for the operator")
--   Healthy      Ready=True: the credentials Secret exists and is well-formed
--   Degraded     Ready=False and Stalled=True: needs a human (the Stalled message
--                says what to do)
--   Progressing  anything else, with the Ready condition's "Reason: message"
--
-- Only Lua's base library is used: Argo CD runs custom health scripts without
-- the string library unless useOpenLibs is set.

local hs = {}

local function condition(status, conditionType)
  if status == nil or status.conditions == nil then
    return nil
  end
  for _, c in ipairs(status.conditions) do
    if c.type == conditionType then
      return c
    end
  end
  return nil
end

local function describe(c)
  if c == nil then
    return nil
  end
  local reason = c.reason
  local message = c.message
  if reason ~= nil and reason ~= "" and message ~= nil and message ~= "" then
    return reason .. ": " .. message
  end
  if message ~= nil and message ~= "" then
    return message
  end
  if reason ~= nil and reason ~= "" then
    return reason
  end
  return nil
end

local status = obj.status
local generation = 0
if obj.metadata ~= nil and obj.metadata.generation ~= nil then
  generation = obj.metadata.generation
end
local observed = 0
if status ~= nil and status.observedGeneration ~= nil then
  observed = status.observedGeneration
end

if status == nil or status.conditions == nil or observed < generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator"
  return hs
end

local ready = condition(status, "Ready")
if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = describe(ready) or "Ready"
  return hs
end

local stalled = condition(status, "Stalled")
if ready ~= nil and ready.status == "False" and stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = stalled.message
  if hs.message == nil or hs.message == "" then
    hs.message = describe(stalled) or describe(ready) or "Stalled"
  end
  return hs
end

hs.status = "Progressing"
hs.message = describe(ready) or describe(condition(status, "Reconciling")) or "Waiting for the operator"
return hs
