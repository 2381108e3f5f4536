//! Shared harness for qam end-to-end tests: starts real qamd processes on temp sockets.
