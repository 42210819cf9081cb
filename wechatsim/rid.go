package wechatsim

import (
	"math"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/wxproxy/wxproxy/wechat"
)

// DefaultRidRecords is how many calls rid/get can find when
// Options.RidRecords is zero.
const DefaultRidRecords = 100_000

// Bounds of the rid log beyond its number of records: each recorded field
// (path, query, request body, answer, client address) keeps at most
// maxRidField bytes, and records are kept in at most ridChunks chunks of
// ridChunkSize bytes, 256 MiB in all.
const (
	maxRidField  = 64 << 10
	ridChunkSize = 1 << 20 // holds the largest record, 5 fields of maxRidField
	ridChunks    = 256
)

// Errcodes of /cgi-bin/openapi/rid/get, which package wechat does not know.
const (
	codeRidNotFound     = 76001
	codeRidMalformed    = 76002
	codeRidNoPermission = 76003
	codeRidSNS          = 76022
)

// ridMessages holds WeChat's errmsg for the rid/get codes. The text of
// 76003 and 76022 is [assumed]: WECHAT.md knows only their meaning.
var ridMessages = map[int]string{
	codeRidNotFound:     "rid not found",
	codeRidMalformed:    "rid is error",
	codeRidNoPermission: "rid does not belong to this account, no permission",
	codeRidSNS:          "rid of a /sns/ api cannot be queried",
}

// ridKey is a rid, "<hex unix>-<8 hex>-<8 hex>", in parsed form: comparing
// and storing it allocates nothing.
type ridKey struct {
	unix int64
	a, b uint32
}

func (k ridKey) String() string { return string(k.append(make([]byte, 0, 26))) }

// append appends the text of k to b.
func (k ridKey) append(b []byte) []byte {
	b = strconv.AppendInt(b, k.unix, 16)
	b = append(b, '-')
	b = appendHex8(b, k.a)
	b = append(b, '-')
	return appendHex8(b, k.b)
}

func appendHex8(b []byte, v uint32) []byte {
	const hexDigits = "0123456789abcdef"
	for shift := 28; shift >= 0; shift -= 4 {
		b = append(b, hexDigits[v>>uint(shift)&0xf])
	}
	return b
}

// parseRid parses the text of a rid; ok is false unless it has exactly the
// shape the simulator hands out.
func parseRid(s string) (k ridKey, ok bool) {
	t, rest, ok1 := strings.Cut(s, "-")
	a, b, ok2 := strings.Cut(rest, "-")
	if !ok1 || !ok2 || len(t) == 0 || len(t) > 15 || len(a) != 8 || len(b) != 8 ||
		!lowerHex(t) || !lowerHex(a) || !lowerHex(b) {
		return ridKey{}, false
	}
	unix, _ := strconv.ParseInt(t, 16, 64)
	av, _ := strconv.ParseUint(a, 16, 32)
	bv, _ := strconv.ParseUint(b, 16, 32)
	return ridKey{unix: unix, a: uint32(av), b: uint32(bv)}, true
}

func lowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// Fields of a recorded call, in the order they are stored.
const (
	fieldPath = iota
	fieldQuery
	fieldBody
	fieldAnswer
	fieldAddr
	numFields
)

// ridRecord is one recorded call. Its fields lie back to back in one chunk
// of the log, from off. It holds no pointers, so the garbage collector never
// looks into the log's records.
type ridRecord struct {
	key   ridKey // key.unix is the invoke time on the simulator clock
	app   uint32 // appConfig.num of the app the call belongs to; 0 = none
	cost  uint32 // milliseconds from arrival to the end of the answer
	chunk uint32
	off   uint32
	lens  [numFields]uint32
}

// ridEntry is a recorded call copied out of the log.
type ridEntry struct {
	app    uint32
	at     int64
	cost   int64
	fields [numFields]string
}

// ridLog keeps the newest recorded calls, forgetting the oldest first once
// it holds maxRecs of them or its maxChunks byte chunks are full. The bytes
// of the records go into fixed-size chunks filled one after the other; a
// chunk whose records have all been forgotten is filled again, and a new one
// is allocated only when none is free. So recording a call allocates nothing
// once the log is warm, memory follows what the records hold, and the
// garbage collector sees a few large byte slices instead of a hundred
// thousand small ones. Finding a rid scans the records, which only rid/get
// does. ridLog is safe for concurrent use.
type ridLog struct {
	maxRecs, chunkSize, maxChunks int

	mu     sync.Mutex
	chunks [][]byte    // by chunk id; grows to maxChunks
	filled []int       // ids of chunks in the order they were filled; the last is being filled
	off    int         // first free byte of the chunk being filled
	recs   []ridRecord // grows to maxRecs, then wraps
	head   int         // index of the oldest record
	n      int         // records held
}

func newRidLog(maxRecs, chunkSize, maxChunks int) *ridLog {
	return &ridLog{maxRecs: maxRecs, chunkSize: chunkSize, maxChunks: maxChunks}
}

// record adds c, whose answer is complete at end, to the log. A call larger
// than a chunk, which the field caps rule out outside tests, is not kept.
func (l *ridLog) record(c *call, end time.Time) {
	r := c.r
	path, query, addr := capString(r.URL.Path), capString(r.URL.RawQuery), capString(r.RemoteAddr)
	rec := ridRecord{
		key:  c.rid,
		cost: uint32(min(end.Sub(c.start).Milliseconds(), math.MaxUint32)),
		lens: [numFields]uint32{uint32(len(path)), uint32(len(query)), uint32(len(c.in)), uint32(len(c.out)), uint32(len(addr))},
	}
	if c.app != nil {
		rec.app = c.app.cfg.num
	}
	size := len(path) + len(query) + len(c.in) + len(c.out) + len(addr)
	if size > l.chunkSize {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.filled) == 0 || l.off+size > l.chunkSize {
		l.nextChunk()
	}
	if l.n == l.maxRecs {
		l.evict()
	}
	cur := l.filled[len(l.filled)-1]
	b := l.chunks[cur][l.off:l.off]
	b = append(b, path...)
	b = append(b, query...)
	b = append(b, c.in...)
	b = append(b, c.out...)
	_ = append(b, addr...)
	rec.chunk, rec.off = uint32(cur), uint32(l.off)
	l.off += size
	if i := (l.head + l.n) % l.maxRecs; i == len(l.recs) {
		l.recs = append(l.recs, rec)
	} else {
		l.recs[i] = rec
	}
	l.n++
}

func capString(s string) string { return s[:min(len(s), maxRidField)] }

// nextChunk starts filling another chunk: the one filled longest ago if
// none of its records is left, else a new one, else (all maxChunks in use)
// the one filled longest ago after forgetting its records. The caller holds
// l.mu.
func (l *ridLog) nextChunk() {
	l.off = 0
	if len(l.filled) > 0 {
		oldest := l.filled[0]
		if l.n == 0 || int(l.at(0).chunk) != oldest || len(l.chunks) == l.maxChunks {
			for l.n > 0 && int(l.at(0).chunk) == oldest {
				l.evict()
			}
			l.filled = append(l.filled[1:], oldest)
			return
		}
	}
	l.chunks = append(l.chunks, make([]byte, l.chunkSize))
	l.filled = append(l.filled, len(l.chunks)-1)
}

// evict forgets the oldest record. The caller holds l.mu and l.n > 0.
func (l *ridLog) evict() {
	l.head = (l.head + 1) % l.maxRecs
	l.n--
}

// at returns the i-th oldest record held. The caller holds l.mu.
func (l *ridLog) at(i int) *ridRecord { return &l.recs[(l.head+i)%l.maxRecs] }

// field returns field f of rec, which the log holds, without copying it: the
// caller holds l.mu while using it.
func (l *ridLog) field(rec *ridRecord, f int) []byte {
	off := int(rec.off)
	for _, n := range rec.lens[:f] {
		off += int(n)
	}
	return l.chunks[rec.chunk][off : off+int(rec.lens[f])]
}

// find returns a copy of the record of key.
func (l *ridLog) find(key ridKey) (ridEntry, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for i := l.n - 1; i >= 0; i-- {
		if rec := l.at(i); rec.key == key {
			e := ridEntry{app: rec.app, at: rec.key.unix, cost: int64(rec.cost)}
			for f := range e.fields {
				e.fields[f] = string(l.field(rec, f))
			}
			return e, true
		}
	}
	return ridEntry{}, false
}

// newest returns the rids of the newest records, newest first, at most n
// (all when n <= 0), keeping those of the app numbered app (appConfig.num)
// and of path when these are not 0 and "".
func (l *ridLog) newest(app uint32, path string, n int) []string {
	out := []string{}
	l.mu.Lock()
	defer l.mu.Unlock()
	for i := l.n - 1; i >= 0 && (n <= 0 || len(out) < n); i-- {
		rec := l.at(i)
		if app != 0 && rec.app != app {
			continue
		}
		if path != "" && string(l.field(rec, fieldPath)) != path {
			continue
		}
		out = append(out, rec.key.String())
	}
	return out
}

// ridAnswer is the success answer of rid/get.
type ridAnswer struct {
	wechat.Response
	Request ridRequest `json:"request"`
}

type ridRequest struct {
	InvokeTime   int64  `json:"invoke_time"`
	CostInMs     int64  `json:"cost_in_ms"`
	RequestURL   string `json:"request_url"`
	RequestBody  string `json:"request_body"`
	ResponseBody string `json:"response_body"`
	ClientIP     string `json:"client_ip"`
}

// ridGet answers POST /cgi-bin/openapi/rid/get {"rid":"..."} with what the
// simulator recorded of that call: the raw query (access_token, secret and
// all, as WeChat may send it), the request body, the answer and the caller.
// Only a token of the app the call belongs to may ask (76003); rids of
// /sns/ calls cannot be queried (76022).
func (s *Server) ridGet(st *state, w *call, r *http.Request, _ url.Values, tok *record, _ time.Time) {
	sty := styleOf(tok.app)
	if r.Method != http.MethodPost {
		st.fail(w, sty, wechat.CodeRequirePOST)
		return
	}
	var req struct {
		Rid string `json:"rid"`
	}
	if !readJSON(w.body(), &req) {
		st.fail(w, sty, wechat.CodeDataFormat)
		return
	}
	key, ok := parseRid(req.Rid)
	if !ok {
		st.fail(w, sty, codeRidMalformed)
		return
	}
	rec, ok := st.ridLog.find(key)
	code := 0
	switch {
	case !ok:
		code = codeRidNotFound
	case rec.app != tok.app.cfg.num:
		code = codeRidNoPermission
	case strings.HasPrefix(rec.fields[fieldPath], "/sns/"):
		code = codeRidSNS
	}
	if code != 0 {
		st.fail(w, sty, code)
		return
	}
	ip, _, err := net.SplitHostPort(rec.fields[fieldAddr])
	if err != nil {
		ip = rec.fields[fieldAddr]
	}
	writeJSON(w, http.StatusOK, ridAnswer{
		Response: wechat.Response{ErrMsg: "ok"},
		Request: ridRequest{
			InvokeTime:   rec.at,
			CostInMs:     rec.cost,
			RequestURL:   rec.fields[fieldQuery],
			RequestBody:  rec.fields[fieldBody],
			ResponseBody: rec.fields[fieldAnswer],
			ClientIP:     ip,
		},
	})
}

// Rids returns the rids of the newest calls rid/get can find, newest first:
// at most n of them (every one when n <= 0), only those of appid (a corpid
// for WeCom) and path when these are not empty. It lets tests find the rid
// of calls whose answer shows none, such as a successful token fetch. The
// result is never nil.
func (s *Server) Rids(appid, path string, n int) []string {
	return s.st.Load().rids(appid, path, n)
}

// rids implements Server.Rids.
func (st *state) rids(appid, path string, n int) []string {
	var app uint32
	if appid != "" {
		a := st.apps[appid]
		if a == nil {
			a = st.merchant(appid)
		}
		if cs := st.suiteCorps(appid); a == nil && len(cs) > 0 {
			a = cs[0]
		}
		if a == nil {
			return []string{}
		}
		app = a.cfg.num
	}
	return st.ridLog.newest(app, path, n)
}
