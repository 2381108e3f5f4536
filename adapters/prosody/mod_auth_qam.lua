-- mod_auth_qam: a Prosody 0.12 auth provider that asks qamd, qam's account daemon, over its
-- Unix socket (JSON lines); Prosody never stores a password. Use: authentication = "qam".
--
-- Options (per host or global):
--   qam_socket  = "/run/qam/qamd.sock"  -- qamd's socket; Prosody's user must be in its group
--   qam_timeout = 3                      -- seconds for one round trip with qamd
-- qamd must grant Prosody's user `verify` and `exists` (the defaults), `register` for in-band
-- registration and `set_password` for password changes, in [permissions.users].
--
-- Prosody is single-threaded: while qamd hashes a password (tens of milliseconds), every
-- other connection waits, as with Prosody's own LDAP and Dovecot auth modules.

local json = require "util.json";
local new_sasl = require "util.sasl".new;

local socket_path = module:get_option_string("qam_socket", "/run/qam/qamd.sock");
local timeout = module:get_option_number("qam_timeout", 3);
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

-- One connection kept open between requests; dropped after any transport error.
local conn;
local next_id = 0;

local function drop_connection()
	if conn then
		conn:close();
		conn = nil;
	end
end

local function connect()
	local c, err = new_unix_socket();
	if not c then
		return nil, err;
	end
	c:settimeout(timeout);
	local ok, cerr = c:connect(socket_path);
	if not ok then
		c:close();
		return nil, ("cannot connect to qamd at %s: %s (is qamd running, and is Prosody's user in the socket's group?)")
			:format(socket_path, tostring(cerr));
	end
	return c;
end

-- One request and its answer on the current connection. Returns the decoded answer, or nil,
-- a message and whether the failure was of the transport (which may be retried).
local function attempt(request)
	if not conn then
		local c, err = connect();
		if not c then
			return nil, err, false;
		end
		conn = c;
	end
	next_id = next_id + 1;
	request.id = next_id;
	local ok, err = conn:send(json.encode(request) .. "\n");
	local answer;
	if ok then
		answer, err = conn:receive("*l");
	end
	if not answer then
		drop_connection();
		return nil, ("qamd connection failed: %s"):format(tostring(err)), err ~= "timeout";
	end
	local reply = json.decode(answer);
	if type(reply) ~= "table" or reply.id ~= request.id then
		drop_connection();
		return nil, "qamd's answer is not valid", false;
	end
	return reply;
end

-- Sends a request; a kept connection that turns out closed (qamd restarted, or closed it
-- as idle) is replaced once by a fresh one. Returns the answer or nil and a logged reason.
local function call(request)
	local reused = conn ~= nil;
	local reply, err, retry = attempt(request);
	if not reply and reused and retry then
		reply, err = attempt(request);
	end
	if not reply then
		log("error", "%s", err);
	end
	return reply, err;
end

-- The error code of a failed answer (`denied`, `forbidden`, ...), logged unless expected.
local function failure(reply, op, username, expected)
	local code = type(reply.error) == "table" and reply.error.code or "unknown";
	if code == "forbidden" then
		log("error", "qamd does not grant `%s` to Prosody's user: add it to [permissions.users] in qamd's config", op);
	elseif code ~= expected then
		log("warn", "qamd refused %s for %s: %s", op, username, tostring(code));
	end
	return code;
end

local provider = {};

function provider.test_password(username, password)
	local reply, err = call({ op = "verify", user = username, password = password });
	if not reply then
		return nil, err;
	end
	if reply.ok then
		return true;
	end
	local code = failure(reply, "verify", username, "denied");
	if code == "denied" then
		return nil, "Auth failed. Invalid username or password.";
	end
	return nil, "Authentication is not available right now (" .. code .. ")";
end

function provider.user_exists(username)
	local reply, err = call({ op = "exists", user = username });
	if not reply then
		return nil, err;
	end
	if not reply.ok then
		return nil, failure(reply, "exists", username);
	end
	if reply.exists then
		return true;
	end
	return nil, "Auth failed. Invalid username";
end

function provider.set_password(username, password)
	local reply, err = call({ op = "set_password", user = username, password = password });
	if not reply then
		return nil, err;
	end
	if reply.ok then
		return true;
	end
	return nil, "Password change refused: " .. failure(reply, "set_password", username);
end

function provider.create_user(username, password)
	if password == nil then
		return nil, "qam accounts need a password";
	end
	local reply, err = call({ op = "register", user = username, password = password });
	if not reply then
		return nil, err;
	end
	if reply.ok then
		return true;
	end
	return nil, "Registration refused: " .. failure(reply, "register", username);
end

function provider.delete_user(username)
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
			failure(reply, "list", "all users");
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
