package token

import "log/slog"

// logger is a holder's logger: every line carries the holder's app. It
// adds the app to each line instead of deriving a logger with it
// (slog.Logger.With copies the handler: hundreds of bytes per holder, and
// a platform holds thousands), so a holder costs no allocation for its
// logger. A holder logs rarely (refreshes, failures), so the work moves
// to where it is cheap.
type logger struct {
	l   *slog.Logger
	app string
}

func (g logger) Info(msg string, args ...any)  { g.l.Info(msg, g.with(args)...) }
func (g logger) Warn(msg string, args ...any)  { g.l.Warn(msg, g.with(args)...) }
func (g logger) Error(msg string, args ...any) { g.l.Error(msg, g.with(args)...) }

func (g logger) with(args []any) []any {
	return append([]any{"app", g.app}, args...)
}
