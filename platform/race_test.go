//go:build race

package platform

// raceEnabled shrinks the load measurement under the race detector.
const raceEnabled = true
