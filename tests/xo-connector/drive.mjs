// Drives a simulated pool with Xen Orchestra's XAPI connector (npm xen-api), as its own users
// do: connect (following HOST_IS_SLAVE), read records, power a VM through tasks (Async.* and
// task watching through events), watch the VM with events, log out. tests/test_xapisim.py
// runs it and judges what it prints: one JSON object a line.
//
// node drive.mjs <file URL of xen-api's index.mjs> <pool host URL> <VM uuid> <transport>
// transport: auto (JSON-RPC, falling back to XML-RPC) or xml-rpc. The password comes in
// XAPI_PASSWORD; a test CA in NODE_EXTRA_CA_CERTS (verified TLS).
const [moduleUrl, url, vmUuid, transport] = process.argv.slice(2)
const { createClient } = await import(moduleUrl)

const say = (event, data = {}) => process.stdout.write(JSON.stringify({ event, ...data }) + '\n')

const xapi = createClient({
  url,
  auth: { user: 'root', password: process.env.XAPI_PASSWORD },
  allowUnauthorized: false,
  debounce: 20,
  transport,
})
xapi.on('eventFetchingError', error => say('eventFetchingError', { error: String(error) }))

function until(what, condition, seconds = 30) {
  return new Promise((resolve, reject) => {
    const deadline = Date.now() + seconds * 1e3
    const check = () => {
      if (condition()) resolve()
      else if (Date.now() > deadline) reject(new Error('timed out waiting for ' + what))
      else setTimeout(check, 20)
    }
    check()
  })
}

try {
  await xapi.connect()
  say('connected', { host: xapi._url.hostname, port: xapi._url.port })
  await xapi.objectsFetched
  const vm = xapi.getObject(vmUuid)
  say('record', { type: vm.$type, name: vm.name_label, power_state: vm.power_state,
    host: vm.$resident_on?.name_label ?? null })
  const records = await xapi.getAllRecords('VM')
  say('records', { count: records.length, pool_master: xapi.pool.$master.address })

  const seen = []
  xapi.objects.on('update', objects => {
    for (const id of Object.keys(objects)) {
      const object = objects[id]
      if (object.$type === 'VM' && object.uuid === vmUuid) seen.push(object.power_state)
    }
  })
  const state = () => xapi.getObject(vmUuid).power_state
  const started = await xapi.callAsync('VM.start', vm.$ref, false, false)
  say('started', { result: started })
  await until('Running', () => state() === 'Running')
  const stopped = await xapi.callAsync('VM.hard_shutdown', vm.$ref)
  say('stopped', { result: stopped })
  await until('Halted', () => state() === 'Halted')
  say('watched', { seen })
  // callAsync destroys each task once it ended, without waiting: see that happen (a "del"
  // event) before logging out, which would cut it short.
  const tasks = () => Object.values(xapi.objects.all).filter(object => object.$type === 'task')
  await until('the tasks destroyed', () => tasks().length === 0)
  say('tasks', { left: tasks().length })
  await xapi.disconnect()
  say('disconnected')
} catch (error) {
  say('error', { error: String(error), code: error?.code ?? null })
  process.exitCode = 1
  await xapi.disconnect()
}
