-- Argo CD health check for finch.connectops.dev/FinchConnection
-- (argocd-cm key: resource.customizations.health.finch.connectops.dev_FinchConnection).
--
-- The operator writes kstatus conditions (Ready, Reconciling, Stalled) plus
-- Connected and ReauthRequired, and sets status.observedGeneration once the
-- result for a spec generation is final.
--
--   Suspended    spec.suspend is true (no Finch calls are made)
--   Progressing  no status yet, or status.observedGeneration < metadata.generation
--                ("Waiting for the operator")
--   Degraded     Stalled=True: needs a human; the message says what to do
--   Healthy      Connected=True: Finch reports the connection connected
--   Progressing  anything else, including a Connect or re-authentication session
--                waiting for the employer (Ready=True, reason AwaitingEmployer),
--                with the Ready condition's "Reason: message"
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

if obj.spec ~= nil and obj.spec.suspend == true then
  hs.status = "Suspended"
  hs.message = "Suspended: spec.suspend is true, the operator makes no Finch calls for this connection"
  return hs
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

local stalled = condition(status, "Stalled")
if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = stalled.message
  if hs.message == nil or hs.message == "" then
    hs.message = describe(stalled) or "Stalled"
  end
  return hs
end

local connected = condition(status, "Connected")
if connected ~= nil and connected.status == "True" then
  hs.status = "Healthy"
  hs.message = describe(connected) or "Connected"
  return hs
end

hs.status = "Progressing"
hs.message = describe(condition(status, "Ready"))
  or describe(condition(status, "Reconciling"))
  or "Waiting for the operator"
return hs
