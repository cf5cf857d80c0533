/*
 * ztracer.hpp — C++ wrapper of the blkin C API (ZTracer::Endpoint,
 * ZTracer::Trace), source-compatible with ceph/blkin's header of the same
 * name. Served by blkkin; link with -lblkin.
 *
 * Endpoint and Trace keep pointers to the strings they are given (string
 * literals are the common case); copy_ip()/copy_name() store a private copy
 * when the string is temporary. A default-constructed Trace is invalid
 * (trace id 0) and records nothing, as does a trace that was not sampled.
 */
#ifndef ZTRACER_H
#define ZTRACER_H

#include <string>
#include <zipkin_c.h>

namespace ZTracer {

const char *const CLIENT_SEND = "cs";
const char *const CLIENT_RECV = "cr";
const char *const SERVER_SEND = "ss";
const char *const SERVER_RECV = "sr";
const char *const WIRE_SEND = "ws";
const char *const WIRE_RECV = "wr";
const char *const CLIENT_SEND_FRAGMENT = "csf";
const char *const CLIENT_RECV_FRAGMENT = "crf";
const char *const SERVER_SEND_FRAGMENT = "ssf";
const char *const SERVER_RECV_FRAGMENT = "srf";

static inline int ztrace_init() { return blkin_init(); }

class Endpoint : private blkin_endpoint {
	std::string own_ip_;   /* set by copy_ip() */
	std::string own_name_; /* set by copy_name() */

	friend class Trace;

	void assign_from(const Endpoint &o)
	{
		own_ip_ = o.own_ip_;
		own_name_ = o.own_name_;
		blkin_init_endpoint(this, own_ip_.empty() ? o.ip : own_ip_.c_str(),
				    o.port,
				    own_name_.empty() ? o.name : own_name_.c_str());
	}

public:
	explicit Endpoint(const char *name) { blkin_init_endpoint(this, "0.0.0.0", 0, name); }
	Endpoint(const char *ip, int port, const char *name)
	{
		blkin_init_endpoint(this, ip, (int16_t)port, name);
	}
	Endpoint(const Endpoint &o) : blkin_endpoint() { assign_from(o); }
	const Endpoint &operator=(const Endpoint &o)
	{
		if (this != &o)
			assign_from(o);
		return *this;
	}

	/* Keep a private copy of a temporary ip / service name. */
	void copy_ip(const std::string &new_ip)
	{
		own_ip_ = new_ip;
		ip = own_ip_.c_str();
	}
	void copy_name(const std::string &new_name)
	{
		own_name_ = new_name;
		name = own_name_.c_str();
	}

	/* Take ip and port from another endpoint, copying or sharing the ip. */
	void copy_address_from(const Endpoint *o)
	{
		own_ip_ = o->ip;
		ip = own_ip_.c_str();
		port = o->port;
	}
	void share_address_from(const Endpoint *o)
	{
		ip = o->ip;
		port = o->port;
	}
	void set_port(int p) { port = (int16_t)p; }
};

class Trace : private blkin_trace {
	std::string own_name_; /* set by copy_name() */

	void reset()
	{
		name = NULL;
		info.trace_id = info.span_id = info.parent_span_id = 0;
		endpoint = NULL;
	}

public:
	/* An invalid trace: valid() is false until init(). */
	Trace() { reset(); }

	/* A new root span, or a child of `parent` when it is valid. */
	Trace(const char *name, const Endpoint *ep, const Trace *parent = NULL)
	{
		reset();
		init(name, ep, parent);
	}

	/* A span from ids received over the wire: the same span, or a child of it. */
	Trace(const char *name, const Endpoint *ep, const blkin_trace_info *i, bool child = false)
	{
		reset();
		init(name, ep, i, child);
	}

	Trace(const Trace &o) : blkin_trace(), own_name_(o.own_name_)
	{
		name = own_name_.empty() ? o.name : own_name_.c_str();
		info = o.info;
		endpoint = o.endpoint;
	}
	const Trace &operator=(const Trace &o)
	{
		if (this != &o) {
			own_name_ = o.own_name_;
			name = own_name_.empty() ? o.name : own_name_.c_str();
			info = o.info;
			endpoint = o.endpoint;
		}
		return *this;
	}

	bool valid() const { return info.trace_id != 0; }
	operator bool() const { return valid(); }

	int init(const char *name, const Endpoint *ep, const Trace *parent = NULL)
	{
		if (parent && parent->valid())
			return blkin_init_child(this, parent, ep ? ep : parent->endpoint, name);
		return blkin_init_new_trace(this, name, ep);
	}

	int init(const char *name, const Endpoint *ep, const blkin_trace_info *i, bool child = false)
	{
		if (child)
			return blkin_init_child_info(this, i, ep, name);
		return blkin_set_trace_properties(this, i, name, ep);
	}

	void copy_name(const std::string &new_name)
	{
		own_name_ = new_name;
		name = own_name_.c_str();
	}

	const blkin_trace_info *get_info() const { return &info; }
	void set_info(const blkin_trace_info *i) { info = *i; }

	void keyval(const char *key, const char *val) const
	{
		if (valid())
			BLKIN_KEYVAL_STRING(this, endpoint, key, val);
	}
	void keyval(const char *key, int64_t val) const
	{
		if (valid())
			BLKIN_KEYVAL_INTEGER(this, endpoint, key, val);
	}
	void keyval(const char *key, const char *val, const Endpoint *ep) const
	{
		if (valid())
			BLKIN_KEYVAL_STRING(this, ep, key, val);
	}
	void keyval(const char *key, int64_t val, const Endpoint *ep) const
	{
		if (valid())
			BLKIN_KEYVAL_INTEGER(this, ep, key, val);
	}

	void event(const char *event) const
	{
		if (valid())
			BLKIN_TIMESTAMP(this, endpoint, event);
	}
	void event(const char *event, const Endpoint *ep) const
	{
		if (valid())
			BLKIN_TIMESTAMP(this, ep, event);
	}
};

} // namespace ZTracer

#endif /* ZTRACER_H */
