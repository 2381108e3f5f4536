-- mod_auth_qam: a Prosody 0.12 auth provider that asks qamd, qam's account daemon, over its
-- Unix socket (JSON lines); Prosody never stores a password. Use: authentication = "qam".
--
-- Options (per host or global):
--   qam_socket  = "/run/qam/qamd.sock"  -- qamd's socket; Prosody's user must be in its group
--   qam_timeout = 3                      -- seconds for one round trip with qamd
--   qam_idle_connections = 4             -- open connections kept for the next requests
--   qam_daemon_users = { "root", "qam" } -- who may serve the socket (see below)
-- qamd must grant Prosody's user `verify` and `exists` (the defaults), `register` for in-band
-- registration, `set_password` for password changes and `lookup` (a default) for deleting an
-- account qamd is deleting, in [permissions.users].
--
-- Prosody is single-threaded. Inside a session's async runner (where SASL and in-band
-- registration run) a request waits for qamd's answer with util.async and net.server's
-- watchfd, so other clients are served while qamd hashes; elsewhere (prosodyctl) it blocks.

local json = require "util.json";
local new_sasl = require "util.sasl".new;
local async = require "util.async";
local server = require "net.server";
local now = require "util.time".now;

local socket_path = module:get_option_string("qam_socket", "/run/qam/qamd.sock");
local daemon_users = module:get_option_array("qam_daemon_users", { "root", "qam" });
local timeout = module:get_option_number("qam_timeout", 3);
local pool_size = module:get_option_number("qam_idle_connections", 4);
local log = module._log;

-- lua-socket 3 exposes Unix sockets as a table with `.stream`; older versions as a callable.
local have_unix, unix = pcall(require, "socket.unix");
local function new_unix_socket()
	if not have_unix then
		return nil, "lua-socket has no Unix socket support (install Debian's lua-socket)";
	end
	if type(unix) == "table" then
		return (unix.stream or unix.tcp)();
	end
	return unix();
end

-- The daemon's identity. lua-socket cannot read SO_PEERCRED, so the module checks what makes
-- the listener trustworthy instead: the socket file and its directory belong to one of
-- `qam_daemon_users`, and the directory cannot be written by group or others (the path above
-- it must be root's, as /run is).
-- Only such a user (or root) can then have created the socket, so only such a user's process
-- (or one it handed the listening socket to) can be listening on it.
local have_lfs, lfs = pcall(require, "lfs");

local function trusted_uids()
	local uids = {};
	local names = {};
	for _, name in ipairs(daemon_users) do
		names[name] = true;
		if tonumber(name) then
			uids[tonumber(name)] = true;
		end
	end
	local passwd = io.open("/etc/passwd");
	if passwd then
		for line in passwd:lines() do
			local name, uid = line:match("^([^:]*):[^:]*:(%d+):");
			if name and names[name] then
				uids[tonumber(uid)] = true;
			end
		end
		passwd:close();
	end
	return uids;
end

local function directory_of(path)
	return path:match("^(.*)/[^/]*$") or ".";
end

-- nil when the socket may be trusted, else why not.
local function untrusted_reason()
	if not have_lfs then
		return "lua-filesystem is missing (install Debian's lua-filesystem)";
	end
	local uids = trusted_uids();
	local socket_attr = lfs.attributes(socket_path);
	if not socket_attr then
		return nil; -- connecting will say the socket is missing
	end
	if socket_attr.mode ~= "socket" or not uids[socket_attr.uid] then
		return ("%s is not a socket of a trusted user (uid %s)"):format(socket_path, tostring(socket_attr.uid));
	end
	local dir = directory_of(socket_path);
	local attr = lfs.attributes(dir);
	if not attr or not uids[attr.uid] then
		return ("%s is not owned by a trusted user"):format(dir);
	end
	local permissions = attr.permissions or "";
	if permissions:sub(5, 5) == "w" or permissions:sub(8, 8) == "w" then
		return ("%s is writable by its group or others"):format(dir);
	end
	return nil;
end

-- Open connections not in use. Each request takes one (or opens one), so requests from
-- several sessions run side by side in qamd's hashing pool; qamd closes idle ones after a
-- while, which the retry in `call` absorbs.
local idle = {};
local next_id = 0;

local function connect()
	local untrusted = untrusted_reason();
	if untrusted then
		return nil, ("refusing qamd's socket: %s (set qam_daemon_users to the user serving it)"):format(untrusted);
	end
	local conn, err = new_unix_socket();
	if not conn then
		return nil, err;
	end
	conn:settimeout(timeout);
	local ok, cerr = conn:connect(socket_path);
	if not ok then
		conn:close();
		return nil, ("cannot connect to qamd at %s: %s (is qamd running, and is Prosody's user in the socket's group?)")
			:format(socket_path, tostring(cerr));
	end
	return conn;
end

-- Waits, without blocking Prosody, until `conn` is readable or `seconds` pass.
local function wait_readable(conn, seconds)
	local wait, done = async.waiter();
	local outcome;
	local function finish(result)
		if outcome == nil then
			outcome = result;
			done();
		end
	end
	local watcher = server.watchfd(conn, function () finish(true); end);
	local timer = module:add_timer(seconds, function () finish(false); end);
	wait();
	watcher:close();
	timer:stop();
	return outcome;
end

-- Reads one answer line within the timeout.
local function receive_line(conn)
	if not async.ready() then
		return conn:receive("*l");
	end
	local deadline = now() + timeout;
	local received = "";
	conn:settimeout(0);
	while true do
		local left = deadline - now();
		if left <= 0 or not wait_readable(conn, left) then
			return nil, "timeout";
		end
		local line, err, partial = conn:receive("*l", received);
		if line then
			conn:settimeout(timeout);
			return line;
		end
		if err ~= "timeout" then
			return nil, err;
		end
		received = partial;
	end
end

-- One request and its answer on one connection. Returns the decoded answer, or nil, a
-- message and whether the failure was of the transport (which may be retried).
local function attempt(request, conn)
	if not conn then
		local err;
		conn, err = connect();
		if not conn then
			return nil, err, false;
		end
	end
	next_id = next_id + 1;
	local id = next_id;
	request.id = id;
	local ok, err = conn:send(json.encode(request) .. "\n");
	local answer;
	if ok then
		answer, err = receive_line(conn);
	end
	if not answer then
		conn:close();
		return nil, ("qamd connection failed: %s"):format(tostring(err)), err ~= "timeout";
	end
	local reply = json.decode(answer);
	if type(reply) ~= "table" or reply.id ~= id then
		conn:close();
		return nil, "qamd's answer is not valid", false;
	end
	if #idle < pool_size then
		idle[#idle + 1] = conn;
	else
		conn:close();
	end
	return reply;
end

-- Sends a request; a kept connection that turns out closed (qamd restarted, or closed it as
-- idle) is replaced once by a fresh one. Returns the answer or nil and a logged reason.
local function call(request)
	local kept = table.remove(idle);
	local reply, err, retry = attempt(request, kept);
	if not reply and kept and retry then
		reply, err = attempt(request, nil);
	end
	if not reply then
		log("error", "%s", err);
	end
	return reply, err;
end

-- The error code of a failed answer (`denied`, `forbidden`, ...), logged unless expected; the
-- attempted user name is not logged (it may be a password typed into the name field).
local function failure(reply, op, expected)
	local code = type(reply.error) == "table" and reply.error.code or "unknown";
	if code == "forbidden" then
		log("error", "qamd does not grant `%s` to Prosody's user: add it to [permissions.users] in qamd's config", op);
	elseif code ~= expected then
		log("warn", "qamd refused %s: %s", op, tostring(code));
	end
	return code;
end

local provider = {};

-- Runs an operation whose success is all that matters. On failure: nil, `refusal` and the
-- error code, and the code itself (`expected` is the one not worth a log line).
local function perform(request, refusal, expected)
	local reply, err = call(request);
	if not reply then
		return nil, err;
	end
	if reply.ok then
		return true;
	end
	local code = failure(reply, request.op, expected);
	return nil, refusal .. code, code;
end

function provider.test_password(username, password)
	local request = { op = "verify", user = username, password = password };
	local ok, err, code = perform(request, "Authentication is not available right now: ", "denied");
	if code == "denied" then
		return nil, "Auth failed. Invalid username or password.";
	end
	return ok, err;
end


function provider.user_exists(username)
	local reply, err = call({ op = "exists", user = username });
	if not reply then
		return nil, err;
	end
	if not reply.ok then
		return nil, failure(reply, "exists");
	end
	if reply.exists then
		return true;
	end
	return nil, "Auth failed. Invalid username";
end

function provider.set_password(username, password)
	return perform({ op = "set_password", user = username, password = password }, "Password change refused: ");
end

function provider.create_user(username, password)
	if password == nil then
		return nil, "qam accounts need a password";
	end
	return perform({ op = "register", user = username, password = password }, "Registration refused: ");
end

-- Prosody purges an account's data (roster, offline messages, PEP, archive, uploads) only
-- after this agrees. Agreed only while qamd is deleting the account (qam-hooks runs
-- `prosodyctl shell user delete`); a user's in-band unregistration is refused.
function provider.delete_user(username)
	local reply, err = call({ op = "lookup", user = username });
	if not reply then
		return nil, err;
	end
	if not reply.ok then
		return nil, "Account deletion is not available right now: " .. failure(reply, "lookup");
	end
	local account = reply.account;
	if type(account) == "table" and account.deleting == true then
		log("info", "letting Prosody purge %s: qamd is deleting the account", username);
		return true;
	end
	log("warn", "refused to delete %s: accounts are removed by the host's admin with qamctl", username);
	return nil, "Accounts are removed by the host's admin";
end

-- Every account name (needs qamd's admin `list`; without it, an empty list and a log line).
function provider.users()
	local names, after = {}, nil;
	repeat
		local reply = call({ op = "list", after = after, limit = 1000 });
		if not reply then
			break;
		end
		if not reply.ok then
			failure(reply, "list");
			break;
		end
		for _, account in ipairs(reply.users) do
			names[#names + 1] = account.name;
		end
		after = type(reply.next) == "string" and reply.next or nil;
	until not after
	local i = 0;
	return function()
		i = i + 1;
		return names[i];
	end
end

function provider.get_sasl_handler()
	return new_sasl(module.host, {
		plain_test = function(_, username, password)
			return provider.test_password(username, password), true;
		end;
	});
end

module:provides("auth", provider);
